//! Every bound the listener puts on its clients, in one place.

use std::time::Duration;

/// The most a message body may grow when an SDK writes it as XML text: a
/// `"` becomes `&quot;` (Python's minidom escapes it so), six bytes for one.
const XML_ESCAPE_FACTOR_MAX: usize = 6;
/// Room for the rest of a publish request (properties, tag, markup).
const REQUEST_SLACK_BYTES: usize = 64 * 1024;

/// Limits of the HTTP listener. [`Limits::default`] fits the Aliyun SDKs
/// and a 4 MiB message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; a connection beyond is answered 503
    /// `ServiceUnavailable` (naming the limit) and closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; beyond, the same.
    pub max_connections_per_address: usize,
    /// Largest request body, in bytes: by default a 4 MiB message body
    /// escaped by any SDK (every byte a `&quot;`) plus 64 KiB. Larger bodies
    /// get 413 before they are read.
    pub max_body_bytes: usize,
    /// Request bodies buffered at once over all connections, in bytes; a
    /// request waits (up to `body_read_timeout`) for room.
    pub max_buffered_body_bytes: usize,
    /// Longest request line (`METHOD target HTTP/1.1`), in characters: 1024
    /// per the API's documentation (400 `InvalidRequestURL` beyond).
    pub max_request_line_chars: usize,
    /// Largest header section (request line included), in bytes; beyond it
    /// the connection is answered 431 and closed.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Time a client has to send a request's header section once it started.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// A keep-alive connection without a request in flight and without
    /// traffic for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_address: 256,
            max_body_bytes: meridian_proto::MAX_BODY_BYTES * XML_ESCAPE_FACTOR_MAX
                + REQUEST_SLACK_BYTES,
            max_buffered_body_bytes: 256 * 1024 * 1024,
            max_request_line_chars: 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}
