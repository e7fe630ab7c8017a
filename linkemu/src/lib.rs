//! A user-space WAN link emulator: relays that make a loopback path behave
//! like a link between distant regions.
//!
//! The machines Meridian's demos run on have no `netem` in their kernel, so
//! `meridian up` places relays between regions instead: a region's processes
//! talk to a relay, and the relay forwards to the real peer after applying the
//! link's [`Conditions`]. [`relay_udp`] relays datagrams (the replicators'
//! QUIC), [`relay_tcp`] relays connections (gRPC between routers and nodes).
//!
//! # What is emulated
//!
//! Each [`Direction`] of a link has its own conditions, changeable at any
//! moment with [`Direction::set`], and its own counters ([`DirectionStats`]).
//! A direction may be shared by several relays (everything region A sends
//! towards region B): they then share its bandwidth and its order.
//!
//! - **Delay** (`delay`, a [`Duration`](std::time::Duration)): added to every datagram and to every
//!   TCP chunk (what one read returned, at most 16 KiB).
//! - **Jitter** (`jitter`, a [`Duration`](std::time::Duration)): an extra delay drawn uniformly
//!   from `[0, jitter]` per datagram or chunk.
//! - **Loss** (`loss`, a fraction from 0.0 to 1.0): that share of datagrams
//!   is dropped. TCP never loses bytes; a chunk the draw hits is delivered a
//!   retransmission timeout late, `max(200 ms, 2 × delay)`, and the chunks
//!   after it on the same connection wait behind it, as TCP's in-order
//!   delivery would make them.
//! - **Bandwidth** (`bandwidth`, bytes per second, or `None` for no limit):
//!   each datagram or chunk takes `size / bandwidth` to pass and queues behind
//!   earlier traffic of the direction.
//! - **Partition** (`partitioned`): every datagram is dropped, including
//!   those already on their way; TCP bytes are held, neither forwarded nor
//!   lost, and released when the partition heals (one `delay` after it), as
//!   TCP retransmitting through an outage would deliver them.
//!
//! A datagram or chunk is due at `max(previous due, now + delay + jitter)`
//! plus its serialization time, so the queue of a direction is first in,
//! first out and nothing is ever reordered. The randomness (loss, jitter)
//! comes from a seeded generator per direction, so a run can be replayed.
//!
//! # What is not emulated
//!
//! - Reordering, duplication and corruption of packets.
//! - Real TCP segment loss: the relay terminates TCP on both sides, so loss
//!   only shows as retransmission delay; congestion control does not react
//!   to it, and the loss draw is per chunk, not per MTU-sized segment.
//! - The TCP handshake: a client's connection is accepted at once and the
//!   relay connects to the target at once, without delay and even through a
//!   partition; only the bytes (and the end of the stream) are delayed or
//!   held. If the target refuses, the client's connection is closed.
//! - MTU and fragmentation: a datagram is one unit, whatever its size (up to
//!   64 KiB).
//!
//! # Limits
//!
//! A direction holds at most 1 MiB of datagrams (or bandwidth × 100 ms if
//! that is larger), counting everything not yet delivered, including
//! datagrams waiting out their delay; beyond that datagrams are tail-dropped
//! (`dropped_queue_full`). A TCP connection holds at most 4 MiB per
//! direction, and with a bandwidth limit a TCP relay also stops admitting
//! while the direction's queue is longer than that same buffer would take to
//! drain; in both cases it stops reading (back-pressure) and never drops
//! bytes. A TCP relay serves at most 1024 connections at once.
//!
//! This crate stands alone: it must not depend on any other Meridian crate.

mod conditions;
mod direction;
mod errors;
mod queue;
mod schedule;
mod tcp;
mod udp;

pub use conditions::{Conditions, InvalidConditions};
pub use direction::{Direction, DirectionStats};
pub use tcp::relay_tcp;
pub use udp::relay_udp;
