//! What one direction of a link does to traffic, and the bounds on it.
//!
//! [`crate::Direction`] never refuses conditions (a running emulation must
//! not fail because of a typo); it clamps them instead. Callers that take
//! conditions from people check them first with [`Conditions::validate`].

use std::time::Duration;

/// The longest delay or jitter: an hour is already far beyond any real link.
pub(crate) const DELAY_MAX: Duration = Duration::from_secs(3600);

/// Conditions of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditions {
    /// Fixed one-way delay added to every datagram and TCP chunk (at most an
    /// hour).
    pub delay: Duration,
    /// Extra delay, drawn uniformly from `[0, jitter]` per datagram or chunk
    /// (at most an hour). Never reorders: a datagram or chunk never overtakes
    /// an earlier one of the same direction.
    pub jitter: Duration,
    /// Fraction of datagrams dropped, from 0.0 to 1.0. On TCP a chunk the
    /// draw hits is delayed by a retransmission timeout instead.
    pub loss: f64,
    /// Capacity in bytes per second (at least 1); `None` for no limit. Each
    /// datagram or chunk takes `size / bandwidth` seconds, queued behind
    /// earlier traffic.
    pub bandwidth: Option<u64>,
    /// UDP: every datagram is dropped. TCP: bytes are held (neither forwarded
    /// nor lost) until the partition heals.
    pub partitioned: bool,
}

/// Conditions that [`Conditions::validate`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidConditions {
    #[error("checking link conditions failed: loss {loss} is not between 0.0 and 1.0")]
    Loss { loss: f64 },
    #[error(
        "checking link conditions failed: bandwidth 0 bytes per second (use None for no limit)"
    )]
    ZeroBandwidth,
    #[error("checking link conditions failed: delay {delay:?} is longer than the maximum {max:?}")]
    Delay { delay: Duration, max: Duration },
    #[error(
        "checking link conditions failed: jitter {jitter:?} is longer than the maximum {max:?}"
    )]
    Jitter { jitter: Duration, max: Duration },
}

impl Conditions {
    /// Checks that every field is within its bounds: loss from 0.0 to 1.0
    /// (not NaN), bandwidth at least 1 byte per second, delay and jitter at
    /// most an hour.
    pub fn validate(&self) -> Result<(), InvalidConditions> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(InvalidConditions::Loss { loss: self.loss });
        }
        if self.bandwidth == Some(0) {
            return Err(InvalidConditions::ZeroBandwidth);
        }
        if self.delay > DELAY_MAX {
            return Err(InvalidConditions::Delay {
                delay: self.delay,
                max: DELAY_MAX,
            });
        }
        if self.jitter > DELAY_MAX {
            return Err(InvalidConditions::Jitter {
                jitter: self.jitter,
                max: DELAY_MAX,
            });
        }
        Ok(())
    }

    /// The nearest conditions that [`Conditions::validate`] accepts: loss
    /// clamped to 0.0..=1.0 (NaN counts as 0.0), bandwidth 0 as 1 byte per
    /// second, delay and jitter cut to an hour.
    pub(crate) fn clamped(self) -> Conditions {
        let loss = if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        };
        Conditions {
            delay: self.delay.min(DELAY_MAX),
            jitter: self.jitter.min(DELAY_MAX),
            loss,
            bandwidth: self.bandwidth.map(|bandwidth| bandwidth.max(1)),
            partitioned: self.partitioned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_the_defaults_and_the_bounds() {
        assert_eq!(Conditions::default().validate(), Ok(()));
        let edge = Conditions {
            delay: DELAY_MAX,
            jitter: DELAY_MAX,
            loss: 1.0,
            bandwidth: Some(1),
            partitioned: true,
        };
        assert_eq!(edge.validate(), Ok(()));
        assert_eq!(edge.clamped(), edge);
    }

    #[test]
    fn validate_refuses_and_clamped_repairs_each_bound() {
        let cases = [
            Conditions {
                loss: f64::NAN,
                ..Conditions::default()
            },
            Conditions {
                loss: -0.1,
                ..Conditions::default()
            },
            Conditions {
                loss: 1.5,
                ..Conditions::default()
            },
            Conditions {
                bandwidth: Some(0),
                ..Conditions::default()
            },
            Conditions {
                delay: Duration::MAX,
                ..Conditions::default()
            },
            Conditions {
                jitter: DELAY_MAX + Duration::from_nanos(1),
                ..Conditions::default()
            },
        ];
        for conditions in cases {
            assert!(conditions.validate().is_err(), "{conditions:?}");
            assert_eq!(
                conditions.clamped().validate(),
                Ok(()),
                "{conditions:?} clamped"
            );
        }
        let message = cases[3].validate().expect_err("zero bandwidth").to_string();
        assert!(
            message.starts_with("checking link conditions failed"),
            "{message}"
        );
    }
}
