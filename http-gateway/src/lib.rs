//! The region node's HTTP listener: two faces over the RocketMQ face's
//! [`Backend`](meridian_face::Backend).
//!
//! * The **Alibaba Cloud MQ HTTP API** (version 2015-06-06) at the root path
//!   (`/topics/{topic}/messages`), so the official Aliyun MQ HTTP SDKs work
//!   unmodified: publish, consume (plain, ordered, transaction check-backs),
//!   acknowledge, commit and roll back, signed with HMAC-SHA1 ([`signature`]),
//!   in XML ([`xml`]). The rules come from the protocol brief
//!   (shared/protocols/http-and-stomp.md, part A).
//! * A small **JSON API** under `/v1/` for scripts and curl (publish, receive,
//!   acknowledge), described by an OpenAPI 3.1 document at
//!   `/v1/openapi.json`.
//!
//! Both turn requests into RocketMQ v2 messages and requests and call the
//! backend; what a message may be (topic types, sizes, delivery times) is the
//! backend's decision, and its refusals are mapped to HTTP answers in one
//! place (the `error` module). The crate depends on `meridian-face` and
//! `meridian-proto`, never on the node: the node hands [`serve`] a listener,
//! its backend and a shutdown token.
//!
//! Left out: HTTPS (put a TLS proxy in front), HTTP/2, the Aliyun API's STS
//! `security-token` (accepted and ignored), per-message `FirstConsumeTime`
//! kept across redeliveries (each delivery reports its own time, see the
//! `aliyun` module).

mod aliyun;
mod connection;
mod error;
mod limits;
mod message;
pub mod properties;
mod queues;
mod request;
mod rest;
mod server;
pub mod signature;
pub mod xml;

pub use limits::Limits;
pub use rest::openapi_document;
pub use server::serve;

use meridian_face::access::Authentication;

/// What the HTTP listener needs besides its listener and backend.
#[derive(Debug, Clone)]
pub struct Config {
    /// The region this node serves (named in the start-up log).
    pub region: String,
    /// Who may call: access keys (the Aliyun signature, HTTP Basic for the
    /// JSON API) or development mode (no checks).
    pub authentication: Authentication,
    pub limits: Limits,
    /// TLS (the topology's `[client_tls]`), or plain TCP.
    pub tls: Option<meridian_face::tls::ServerTls>,
}
