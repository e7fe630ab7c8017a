//! Which socket errors a relay survives, and how it backs off.
//!
//! A relay serves many peers; one peer's trouble (an ICMP port unreachable
//! reported on the next call, a connection reset before `accept`) must not
//! end it. Errors that say the socket itself is unusable do end it; anything
//! else (out of file descriptors or buffers) is waited out with back-off.

use std::io;
use std::time::Duration;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a relay does about an error of its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// One peer's or one packet's trouble: go on at once.
    Peer,
    /// The socket cannot be used (not listening, wrong kind): stop.
    Fatal,
    /// Anything else, likely a resource running out: go on after a pause.
    Resource,
}

pub(crate) fn severity(error: &io::Error) -> Severity {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | HostUnreachable
        | NetworkUnreachable | NotConnected | TimedOut | Interrupted | WouldBlock | BrokenPipe => {
            Severity::Peer
        }
        InvalidInput | Unsupported => Severity::Fatal,
        _ => Severity::Resource,
    }
}

/// Pauses after repeated resource errors: 10 ms, doubling up to 1 s, back to
/// 10 ms after a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(crate) async fn pause(&mut self) {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_errors_concern_a_peer() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(severity(&refused), Severity::Peer);
        let not_listening = io::Error::from(io::ErrorKind::InvalidInput);
        assert_eq!(severity(&not_listening), Severity::Fatal);
        let out_of_memory = io::Error::from(io::ErrorKind::OutOfMemory);
        assert_eq!(severity(&out_of_memory), Severity::Resource);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            backoff.pause().await;
        }
        // 10 + 20 + ... + 640 ms, then 1 s three times.
        assert_eq!(start.elapsed(), Duration::from_millis(1270 + 3000));
        backoff.succeeded();
        let start = tokio::time::Instant::now();
        backoff.pause().await;
        assert_eq!(start.elapsed(), BACKOFF_MIN);
    }
}
