//! One way to show an error: its message, then the message of each of its
//! sources, joined by `": "` — `replicate to peer b at 127.0.0.1:8183: the
//! link stalled: no ack for the batch through sequence 42 after 30s`.
//!
//! Every Meridian process logs errors and answers clients this way, so a
//! message names what was being done and why it failed, however deep the
//! cause. `format!("{}", Report(&error))` in format strings and `tracing`
//! fields (`error = %Report(&error)`), [`chain`] where a `String` is needed.

use std::error::Error;
use std::fmt;

/// Displays an error with its chain of sources.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(formatter, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The error and its sources as one line (see [`Report`]).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    Report(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("read the checkpoint of peer b")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("call GetCheckpoint on 127.0.0.1:8083")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_source_follows_its_error() {
        let error = Outer(Middle(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert_eq!(
            chain(&error),
            "read the checkpoint of peer b: call GetCheckpoint on 127.0.0.1:8083: connection refused"
        );
        assert_eq!(format!("{}", Report(&error)), chain(&error));
    }

    #[test]
    fn an_error_without_sources_is_its_message() {
        let error = std::io::Error::other("disk full");
        assert_eq!(chain(&error), "disk full");
    }
}
