//! The gateway served on a loopback port over an in-memory backend, driven
//! with raw HTTP/1.1 (tests/gateway/support.rs).

mod aliyun;
mod json;
mod server;
mod support;
