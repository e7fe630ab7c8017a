//! The accept loop: one session task per connection, up to
//! [`crate::Limits::max_connections`]; every task tracked, so [`serve`]
//! returns only once all of them ended.

use crate::Config;
use crate::error::SessionError;
use crate::session::{self, Shared};
use meridian_face::Backend;
use meridian_face::access::Authentication;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Sockets over the connection limit being told so at once; beyond, they
/// are closed without a word.
const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused socket may take to receive its ERROR frame.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, for instance).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    let limit = config.limits.max_connections;
    let connections = Arc::new(Semaphore::new(limit));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let shared = Arc::new(Shared { backend, config });
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, %address, "STOMP accept failed; trying again shortly");
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => {
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.child_token();
                tasks.spawn(async move {
                    session::run(socket, peer, shared, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, limit, "STOMP connection refused: too many connections");
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    tasks.spawn(async move {
                        let error = SessionError::TooManyConnections { limit };
                        session::refuse(socket, error, REFUSAL_WRITE_TIMEOUT).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    tracing::info!(%address, "STOMP server stopped");
    Ok(())
}
