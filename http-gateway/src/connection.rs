//! When to give up on a connection: a header section that does not arrive
//! in time, or a keep-alive connection left idle.
//!
//! hyper's own header timeout also runs while a kept-alive connection waits
//! for its next request, which would close idle connections after the
//! (short) header timeout; so the gateway keeps its own clock: the socket
//! wrapper [`Watched`] notes reads and writes, the service notes requests in
//! flight ([`Activity::begin`]), and [`Activity::expired`] says when the
//! connection may be dropped. A connection with a request in flight never
//! expires here (its handler bounds its own time: body reads time out, long
//! polls end by 30 s).

use parking_lot::Mutex;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// The last read or write, or the end of the last request.
    last_progress: Instant,
    /// When the first byte of a request arrived, while no request is in
    /// flight (a header section being read).
    header_started: Option<Instant>,
}

/// What happens on one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<State>,
}

/// A request in flight; ends when dropped.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.last_progress = Instant::now();
    }
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                last_progress: Instant::now(),
                header_started: None,
            }),
        })
    }

    /// A request's header section arrived: it is in flight until the
    /// returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.header_started = None;
        Busy(Arc::clone(self))
    }

    fn read(&self) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.last_progress = now;
        if state.in_flight == 0 && state.header_started.is_none() {
            state.header_started = Some(now);
        }
    }

    fn wrote(&self) {
        self.state.lock().last_progress = Instant::now();
    }

    /// Resolves once the connection has no request in flight and either a
    /// header section took longer than `header_timeout` or nothing
    /// happened for `idle_timeout`.
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = {
                let state = self.state.lock();
                if state.in_flight > 0 {
                    now + idle_timeout
                } else {
                    let idle = state.last_progress + idle_timeout;
                    match state.header_started {
                        Some(started) => idle.min(started + header_timeout),
                        None => idle,
                    }
                }
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A socket that tells its [`Activity`] about reads and writes.
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        if matches!(polled, Poll::Ready(Ok(()))) && buffer.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(context, buffer);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_header_section_expires_after_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.read();
        activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection() {
        let activity = Activity::new();
        let busy = activity.begin();
        let waiting = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                activity
                    .expired(Duration::from_secs(10), Duration::from_secs(60))
                    .await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(busy);
        let expired_at = tokio::time::timeout(Duration::from_secs(300), waiting)
            .await
            .expect("expires")
            .expect("joins");
        assert!(expired_at >= ended + Duration::from_secs(60));
        assert!(expired_at <= ended + Duration::from_secs(120));
    }
}
