//! Receipt handles: what a consumer presents to acknowledge a delivery.
//!
//! A handle names one delivery of one offset: region, queue, offset, delivery
//! attempt and invisibility deadline. Any later delivery of the same offset
//! (a redelivery, or a changed invisible duration) has a different attempt or
//! deadline, so an old handle no longer matches and is refused. The region is
//! carried so that, later, any node or router can tell which region owns the
//! delivery. The text form is `v1.<region>.<queue>.<offset>.<attempt>.<deadline_ms>`;
//! clients treat it as opaque.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHandle {
    pub region: String,
    pub queue_id: i32,
    pub offset: u64,
    pub attempt: u32,
    pub deadline_ms: i64,
}

/// Why a handle string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt handle `{handle}` is malformed: {reason}")]
pub struct MalformedHandle {
    pub handle: String,
    pub reason: &'static str,
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "v1.{}.{}.{}.{}.{}",
            self.region, self.queue_id, self.offset, self.attempt, self.deadline_ms
        )
    }
}

impl std::str::FromStr for ReceiptHandle {
    type Err = MalformedHandle;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| MalformedHandle {
            handle: text.chars().take(128).collect(),
            reason,
        };
        let mut parts = text.split('.');
        if parts.next() != Some("v1") {
            return Err(malformed("unknown version (expected `v1.`)"));
        }
        let region = parts.next().filter(|region| !region.is_empty());
        let region = region
            .ok_or_else(|| malformed("missing region"))?
            .to_owned();
        let mut number = |what| parts.next().ok_or_else(|| malformed(what));
        let queue_id = number("missing queue")?
            .parse()
            .map_err(|_| malformed("queue is not a number"))?;
        let offset = number("missing offset")?
            .parse()
            .map_err(|_| malformed("offset is not a number"))?;
        let attempt = number("missing attempt")?
            .parse()
            .map_err(|_| malformed("attempt is not a number"))?;
        let deadline_ms = number("missing deadline")?
            .parse()
            .map_err(|_| malformed("deadline is not a number"))?;
        if parts.next().is_some() {
            return Err(malformed("trailing fields"));
        }
        Ok(Self {
            region,
            queue_id,
            offset,
            attempt,
            deadline_ms,
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn routers_read_the_issuing_region_from_a_handle() {
        let handle = ReceiptHandle {
            region: "eu-west".to_owned(),
            queue_id: 3,
            offset: 17,
            attempt: 2,
            deadline_ms: 1_700_000_000_000,
        };
        assert_eq!(
            meridian_face::receipt_handle_region(&handle.to_string()),
            Some("eu-west")
        );
        assert_eq!(meridian_face::receipt_handle_region("v2.x.1"), None);
        assert_eq!(meridian_face::receipt_handle_region("v1..1"), None);
    }
    use super::*;

    #[test]
    fn round_trips() {
        let handle = ReceiptHandle {
            region: "eu-west".into(),
            queue_id: 7,
            offset: 12345,
            attempt: 2,
            deadline_ms: 1_700_000_000_000,
        };
        assert_eq!(handle.to_string().parse::<ReceiptHandle>(), Ok(handle));
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for text in [
            "",
            "v1",
            "v2.a.1.2.3.4",
            "v1.a.x.2.3.4",
            "v1.a.1.2.3.4.5",
            "v1..1.2.3.4",
        ] {
            assert!(text.parse::<ReceiptHandle>().is_err(), "{text}");
        }
    }
}
