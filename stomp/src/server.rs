//! The accept loop, [`meridian_face::accept::serve`]: one session task per
//! connection, up to [`crate::Limits::max_connections`] and
//! [`crate::Limits::max_connections_per_address`]; a connection beyond gets
//! an ERROR frame naming the limit.

use crate::Config;
use crate::error::SessionError;
use crate::frame;
use crate::session::{self, Shared};
use bytes::BytesMut;
use meridian_face::Backend;
use meridian_face::accept::{self, AcceptLimits, ConnectionHandler, Refused};
use meridian_face::access::Authentication;
use meridian_face::tls::ClientStream;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves STOMP on `listener` until `shutdown` fires; then every
/// connection gets an ERROR frame "server shutting down" and is closed, and
/// this returns once all of their tasks ended.
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
            region = %config.region,
            "STOMP server listening; authentication in development mode: anonymous clients accepted"
        ),
        Authentication::Keys(keys) => tracing::info!(
            %address,
            region = %config.region,
            keys = keys.len(),
            "STOMP server listening; clients log in with an access key id and its secret"
        ),
    }
    let limits = AcceptLimits {
        connections: config.limits.max_connections,
        per_peer_address: config.limits.max_connections_per_address,
    };
    let shared = Arc::new(Shared { backend, config });
    let tls = shared.config.tls.clone();
    accept::serve(listener, "STOMP", limits, tls, shared, shutdown).await;
    tracing::info!(%address, "STOMP server stopped");
    Ok(())
}

impl ConnectionHandler for Shared {
    fn serve(
        self: Arc<Self>,
        stream: ClientStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        session::run(stream, peer, self, shutdown)
    }

    fn refusal(&self, refused: &Refused) -> Vec<u8> {
        let error = SessionError::ConnectionRefused {
            reason: refused.clone(),
        };
        let mut bytes = BytesMut::new();
        frame::encode(&error.to_frame(None), &mut bytes);
        bytes.to_vec()
    }

    fn plain_text_refusal(&self) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        frame::encode(&SessionError::PlainTextToTlsPort.to_frame(None), &mut bytes);
        bytes.to_vec()
    }
}
