//! The listener: accepting connections ([`meridian_face::accept`]: at most
//! `max_connections`, `max_connections_per_address` from one address, a 503
//! beyond), HTTP/1.1
//! on each with hyper, and what every request goes through before its face
//! sees it: a request id, the request-line limit, the body read (limited in
//! size, time and buffered total), then the Aliyun API or, under `/v1/`,
//! the JSON API; every answer carries `x-mq-request-id`, `x-mq-version` and
//! `Date` (hyper writes it).
//!
//! Shutdown: the accept loop stops, each connection finishes the request it
//! serves (long polls end early with the empty answer) and closes, and
//! [`serve`] returns once all have.

use crate::connection::{Activity, Watched};
use crate::error::{GatewayError, XML_CONTENT_TYPE};
use crate::request::{Gateway, RequestContext};
use crate::{Config, aliyun, rest, xml};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use meridian_face::Backend;
use meridian_face::accept::{self, AcceptLimits, ConnectionHandler, Refused};
use meridian_face::access::Authentication;
use meridian_face::tls::ClientStream;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// The API version every answer names.
const API_VERSION: &str = "2015-06-06";

/// Serves the HTTP faces on `listener` until `shutdown` is cancelled, then
/// lets requests in flight finish and returns.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    match &config.authentication {
        Authentication::Development => tracing::info!(
            %address,
            region = config.region,
            "HTTP API (Aliyun MQ and JSON) listening; authentication: development mode, \
             credentials are not checked"
        ),
        Authentication::Keys(keys) => tracing::info!(
            %address,
            region = config.region,
            keys = keys.len(),
            "HTTP API (Aliyun MQ and JSON) listening; authentication: access keys"
        ),
    }
    let limits = AcceptLimits {
        connections: config.limits.max_connections,
        per_peer_address: config.limits.max_connections_per_address,
    };
    let tls = config.tls.clone();
    let gateway = Arc::new(Gateway::new(backend, config, shutdown.clone(), address));
    let server = Arc::new(Server {
        rest: rest::router(Arc::clone(&gateway)),
        gateway,
    });
    accept::serve(listener, "HTTP", limits, tls, server, shutdown).await;
    tracing::info!(%address, "HTTP API stopped");
    Ok(())
}

#[derive(Clone)]
struct Server {
    gateway: Arc<Gateway>,
    rest: axum::Router,
}

impl ConnectionHandler for Server {
    fn serve(
        self: Arc<Self>,
        stream: ClientStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        Server::clone(&self).connection(stream, peer, shutdown)
    }

    /// A 503 with the Aliyun API's XML error (the request is not read, so
    /// which API it was for is unknown), then the connection closes.
    fn refusal(&self, refused: &Refused) -> Vec<u8> {
        let request_id = crate::message::new_message_id();
        let error = GatewayError::ConnectionRefused {
            reason: refused.clone(),
        };
        let body = xml::write_error(
            "ServiceUnavailable",
            &error.to_string(),
            &request_id,
            &format!("{}://{}", self.gateway.scheme(), self.gateway.local_address),
        );
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {XML_CONTENT_TYPE}\r\n\
             content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\
             x-mq-version: {API_VERSION}\r\nx-mq-request-id: {request_id}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A 400 in plain text, as the client spoke: this port takes HTTPS.
    fn plain_text_refusal(&self) -> Vec<u8> {
        let request_id = crate::message::new_message_id();
        let body = xml::write_error(
            "InvalidArgument",
            &GatewayError::PlainTextToTlsPort.to_string(),
            &request_id,
            &format!("https://{}", self.gateway.local_address),
        );
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: {XML_CONTENT_TYPE}\r\n\
             content-length: {}\r\nconnection: close\r\n\
             x-mq-version: {API_VERSION}\r\nx-mq-request-id: {request_id}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl Server {
    /// Serves one connection until it closes, expires or the gateway stops.
    async fn connection(self, stream: ClientStream, peer: SocketAddr, shutdown: CancellationToken) {
        if let Err(error) = stream.tcp().set_nodelay(true) {
            tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
        }
        let activity = Activity::new();
        let limits = self.gateway.limits().clone();
        let service = {
            let activity = Arc::clone(&activity);
            let server = self.clone();
            hyper::service::service_fn(move |request| {
                let busy = activity.begin();
                let server = server.clone();
                async move {
                    let response = server.respond(peer, request).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true)
            .max_headers(limits.max_headers)
            .max_header_size(limits.max_header_bytes);
        let connection = http.serve_connection(
            TokioIo::new(Watched::new(stream, Arc::clone(&activity))),
            service,
        );
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                    return;
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = activity.expired(limits.header_read_timeout, limits.idle_timeout) => {
                    tracing::debug!(%peer, "closing an HTTP connection: idle, or its request headers came too slowly");
                    return;
                }
            }
        }
    }

    /// The answer to one request.
    async fn respond(&self, peer: SocketAddr, request: Request<Incoming>) -> Response {
        let context = RequestContext {
            request_id: crate::message::new_message_id(),
            peer,
            host_id: host_id(&request, &self.gateway),
        };
        let json = is_json_api(request.uri().path());
        let mut response = match self.dispatch(&context, json, request).await {
            Ok(response) => response,
            Err(error) => {
                if error.is_server_side() {
                    tracing::warn!(
                        request_id = context.request_id,
                        %peer,
                        error = %meridian_report::Report(&error),
                        "HTTP request failed"
                    );
                } else if !matches!(error, GatewayError::NoMessage) {
                    tracing::debug!(
                        request_id = context.request_id,
                        %peer,
                        error = %meridian_report::Report(&error),
                        "HTTP request refused"
                    );
                }
                if json {
                    error.json_response()
                } else {
                    error.aliyun_response(&context.request_id, &context.host_id)
                }
            }
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&context.request_id) {
            headers.insert("x-mq-request-id", value);
        }
        headers.insert("x-mq-version", HeaderValue::from_static(API_VERSION));
        response
    }

    async fn dispatch(
        &self,
        context: &RequestContext,
        json: bool,
        request: Request<Incoming>,
    ) -> Result<Response, GatewayError> {
        let limits = self.gateway.limits();
        let line_chars = request_line_chars(&request);
        if line_chars > limits.max_request_line_chars {
            return Err(GatewayError::RequestLineTooLong {
                chars: line_chars,
                max: limits.max_request_line_chars,
            });
        }
        let (parts, body) = request.into_parts();
        // Held until the answer is made: the body stays in memory until then.
        let (body, _buffered) = self.read_body(&parts, body).await?;
        if json {
            rest::handle(&self.gateway, &self.rest, context, parts, body).await
        } else {
            aliyun::handle(&self.gateway, context, &parts, body).await
        }
    }

    /// Reads a request body within the limits; the permit holds its share
    /// of the buffered-bodies budget.
    async fn read_body(
        &self,
        parts: &Parts,
        body: Incoming,
    ) -> Result<(Bytes, Option<OwnedSemaphorePermit>), GatewayError> {
        let limits = self.gateway.limits();
        let max_bytes = limits.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes as u64) {
            // Refused before reading: a client waiting on `Expect:
            // 100-continue` never sends it.
            return Err(GatewayError::BodyTooLarge { max_bytes });
        }
        if body.is_end_stream() {
            return Ok((Bytes::new(), None));
        }
        let reserved = declared
            .and_then(|length| usize::try_from(length).ok())
            .unwrap_or(max_bytes)
            .clamp(1, limits.max_buffered_body_bytes.max(1));
        let seconds = limits.body_read_timeout.as_secs();
        let permit = tokio::time::timeout(
            limits.body_read_timeout,
            Arc::clone(&self.gateway.body_budget)
                .acquire_many_owned(u32::try_from(reserved).unwrap_or(u32::MAX)),
        )
        .await
        .map_err(|_| GatewayError::Busy)?
        .map_err(|_| GatewayError::Busy)?;
        let collected = tokio::time::timeout(
            limits.body_read_timeout,
            Limited::new(body, max_bytes).collect(),
        )
        .await
        .map_err(|_| GatewayError::BodyTimeout { seconds })?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                GatewayError::BodyTooLarge { max_bytes }
            } else {
                GatewayError::BodyUnreadable {
                    reason: error.to_string(),
                }
            }
        })?;
        Ok((collected.to_bytes(), Some(permit)))
    }
}

/// Whether `path` belongs to the JSON API.
fn is_json_api(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// `METHOD target HTTP/1.1`, in characters.
fn request_line_chars<B>(request: &Request<B>) -> usize {
    let target = match request.uri().path_and_query() {
        Some(path_and_query) if request.uri().scheme().is_none() => path_and_query.as_str().len(),
        _ => request.uri().to_string().len(),
    };
    request.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len()
}

/// `http://` (`https://` with TLS) and the Host the client addressed (the
/// listener's address without one).
fn host_id<B>(request: &Request<B>, gateway: &Gateway) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty() && host.len() <= 255)
        .map_or_else(|| gateway.local_address.to_string(), str::to_owned);
    format!("{}://{host}", gateway.scheme())
}
