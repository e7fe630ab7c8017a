//! Topology files: the regions, sites, links and topics of a Meridian
//! deployment, and optionally a drill to play against it.
//!
//! Pure data plus validation. This crate must not depend on tokio, on any server
//! crate, or on anything that does I/O beyond reading the topology file.
//!
//! Every process of a deployment reads the same topology: the node learns its
//! addresses and data directory, the replicator its peers, the router the
//! link latencies that order failover, `meridian up` what to start and
//! `meridian drill run` the drill.
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
//!   [`Topology::link_between`], [`Topology::distance_ms`] and
//!   [`Topology::regions_by_distance`] answer the questions the services ask.
//!
//! Every failure is a [`TopologyError`] naming the file, the key
//! (`topics.demo.queues`), the value and what is allowed. Example files,
//! each one commented, live in `topology/examples/`; a test parses them all.
//!
//! # File format
//!
//! ```toml
//! [regions.eu-west]            # [a-z0-9][a-z0-9-]{0,31}
//! site = "public"              # public | private
//! router = "127.0.0.1:8081"    # RocketMQ 5 gRPC access point for clients
//! node = "127.0.0.1:8082"
//! admin = "127.0.0.1:8083"
//! replicator = "127.0.0.1:8084"  # UDP (QUIC)
//! data_dir = "data/eu-west"    # relative to the file
//! flush = "sync"               # default sync | async
//! router_mode = "direct"       # default direct | proxy
//! storage_memory_mb = 256      # default 256, 16..=1048576: RocksDB memtables + block cache
//!
//! [[links]]
//! between = ["eu-west", "us-east"]
//! latency_ms = 40              # one-way, 0..=60000; orders failover
//! jitter_ms = 5                # default 0, 0..=60000: extra delay, uniform in [0, 5]
//! loss_percent = 0.5           # default 0: 0 to 100
//! bandwidth_kbps = 100000      # default none (no limit): kilobits per second
//!
//! [topics.orders]              # RocketMQ topic name rules
//! queues = 8                   # 1..=1024
//! message_types = ["normal"]   # normal | fifo | delay | transaction
//! replicate_to = ["eu-west", "us-east"]
//! consume_from = "earliest"    # default earliest | latest
//!
//! [groups.billing]             # optional: consumer group policies
//! fifo = false                 # default false: ordered per message group
//! max_attempts = 17            # default 17, 1..=1000: then to %DLQ%billing
//! invisible_ms = 60000         # default 60000: receives that name none
//! retry_backoff_ms = [1000, 5000, 10000]  # default RocketMQ's 1 s … 2 h
//! ```
//!
//! An optional `[drill]` section scripts a failure scenario ([`Drill`]) that
//! `meridian drill run FILE` plays against the deployment: load through one
//! region's router, then steps that kill, stop, start or restart a process,
//! or partition, heal or degrade the traffic between two regions, then
//! checks ([`DrillExpect`]). The `drill` module documents every key; a
//! short one:
//!
//! ```toml
//! [drill]
//! description = "eu-west's node dies and comes back"
//! seed = 7                     # optional; `--seed` overrides
//! tail_ms = 3000               # default 3000: load after the last step
//! drain_timeout_ms = 30000     # default 30000: consumers catching up at the end
//!
//! [drill.load]
//! region = "eu-west"           # whose router the load uses
//! topic = "orders"
//! group = "drill"              # default drill
//! producers = 1                # default 1, 0..=64
//! consumers = 1                # default 1, 0..=64
//! send_interval_ms = 100       # default 100, 1..=60000
//! body_bytes = 256             # default 256, 1..=4194304
//! warmup_ms = 2000             # default 2000: load before the first step
//!
//! [[drill.load.clients]]       # official clients run as commands
//! name = "python-producer"     # unique, [A-Za-z0-9_-]{1,64}
//! kind = "producer"            # producer | consumer
//! command = ["python3", "client.py", "--endpoints", "{endpoint}", "--topic", "{topic}"]
//!                              # placeholders: {endpoint} {topic} {group}
//!
//! [[drill.steps]]
//! after_ms = 0                 # default 0: wait after the previous step
//! action = "kill"              # kill | stop | start | restart: need region and role
//! region = "eu-west"
//! role = "node"                # node | replicator | router
//!
//! [[drill.steps]]
//! after_ms = 3000
//! action = "partition"         # partition | heal | degrade: need link
//! link = ["eu-west", "us-east"]
//! one_way = true               # partition only, default false: link[0] → link[1] only
//!
//! [[drill.steps]]
//! when = "recovered"           # optional: recovered | caught-up, then act
//! within_ms = 30000            # default 30000: how long `when` may take
//! action = "degrade"           # at least one of the four link values
//! link = ["eu-west", "us-east"]
//! latency_ms = 200
//! loss_percent = 5.0
//!
//! [drill.expect]               # optional
//! max_lost = 0                 # default 0
//! max_duplicates_after_ack = 0 # default: report only
//! max_recovery_ms = 2000       # default: report only
//! ```

mod access;
mod catalog;
mod demo;
mod drill;
mod env;
mod error;
mod graph;
mod group;
mod load;
mod model;
mod routing;
mod validate;
mod validate_drill;

pub use access::{AccessKey, Action, Grant, Patterns, load_access_keys};
pub use catalog::{Catalog, CatalogEntry, CatalogKind};
pub use demo::DEMO_TOPIC;
pub use drill::{
    CLIENT_PLACEHOLDERS, ClientKind, Drill, DrillClient, DrillExpect, DrillLoad, DrillStep,
    LinkChange, ProcessAction, ProcessRole, StepAction, StepCondition,
};
pub use error::TopologyError;
pub use group::{
    BROADCAST_INSTANCE_SEPARATOR, DEAD_LETTER_PREFIX, DEFAULT_INVISIBLE_MS, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_BACKOFF_MS, GROUP_NAME_LENGTH_MAX, Group, broadcast_instance, configured_group,
    dead_letter_group, dead_letter_topic_name,
};
pub use model::{
    Access, ConsumeFrom, DEFAULT_RETENTION_MS, Durability, FlushMode, Link, MessageType, Region,
    RouterMode, Site, TlsFiles, Topic, Topology, TransactionChecks,
};
