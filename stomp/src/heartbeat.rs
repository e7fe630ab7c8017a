//! Heart-beat negotiation (STOMP 1.2 "Heart-beating"), without I/O.
//!
//! The client offers `cx,cy` (it can send every `cx` ms, wants to receive
//! every `cy` ms), the server answers `sx,sy`. The server then sends every
//! `max(sx, cy)` ms and expects the client every `max(cx, sy)` ms, each only
//! when both numbers are non-zero. Silence from the client for
//! [`SILENCE_FACTOR`] times its interval closes the connection (network
//! delays and a client's timer are not exact).

use std::time::Duration;

/// How many of the client's heart-beat intervals may pass without a byte
/// from it before the server closes the connection.
pub(crate) const SILENCE_FACTOR: u32 = 2;

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeartBeats {
    /// How often the server sends a heart-beat when it sends nothing else.
    pub(crate) send_every: Option<Duration>,
    /// How long the server waits for a byte from the client before closing.
    pub(crate) silence_limit: Option<Duration>,
}

/// The `heart-beat` header value `x,y` (milliseconds); a missing header is
/// `0,0`. `None` if it is not two non-negative integers.
pub(crate) fn parse(value: Option<&str>) -> Option<(u64, u64)> {
    let Some(value) = value else {
        return Some((0, 0));
    };
    let (x, y) = value.split_once(',')?;
    let number = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    Some((number(x)?, number(y)?))
}

/// The server's offer `sx,sy` as the CONNECTED frame states it.
pub(crate) fn offer(send: Duration, receive: Duration) -> (u64, u64) {
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    (millis(send), millis(receive))
}

/// The agreed heart-beats for client offer `client` and server offer
/// `server`, both `(x, y)` in ms.
pub(crate) fn negotiate(client: (u64, u64), server: (u64, u64)) -> HeartBeats {
    let (client_send, client_receive) = client;
    let (server_send, server_receive) = server;
    let send_every = (server_send != 0 && client_receive != 0)
        .then(|| Duration::from_millis(server_send.max(client_receive)));
    let silence_limit = (client_send != 0 && server_receive != 0).then(|| {
        Duration::from_millis(client_send.max(server_receive)).saturating_mul(SILENCE_FACTOR)
    });
    HeartBeats {
        send_every,
        silence_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_header() {
        assert_eq!(parse(None), Some((0, 0)));
        assert_eq!(parse(Some("4000,4000")), Some((4000, 4000)));
        assert_eq!(parse(Some(" 0 , 10 ")), Some((0, 10)));
        assert_eq!(parse(Some("4000")), None);
        assert_eq!(parse(Some("-1,0")), None);
        assert_eq!(parse(Some("1,2,3")), None);
        assert_eq!(parse(Some("a,b")), None);
        assert_eq!(parse(Some(",")), None);
        assert_eq!(parse(Some("99999999999999999999999,1")), None);
    }

    #[test]
    fn each_side_uses_the_larger_interval() {
        let agreed = negotiate((1000, 1000), (10_000, 10_000));
        assert_eq!(agreed.send_every, Some(Duration::from_secs(10)));
        assert_eq!(agreed.silence_limit, Some(Duration::from_secs(20)));
        let agreed = negotiate((30_000, 500), (10_000, 10_000));
        assert_eq!(agreed.send_every, Some(Duration::from_secs(10)));
        assert_eq!(agreed.silence_limit, Some(Duration::from_secs(60)));
    }

    #[test]
    fn zero_on_either_side_turns_a_direction_off() {
        let agreed = negotiate((0, 0), (10_000, 10_000));
        assert_eq!(agreed.send_every, None);
        assert_eq!(agreed.silence_limit, None);
        let agreed = negotiate((1000, 0), (10_000, 10_000));
        assert_eq!(agreed.send_every, None);
        assert_eq!(agreed.silence_limit, Some(Duration::from_secs(20)));
        let agreed = negotiate((1000, 1000), (0, 0));
        assert_eq!(agreed, negotiate((0, 0), (0, 0)));
    }

    #[test]
    fn the_offer_is_in_milliseconds() {
        assert_eq!(
            offer(Duration::from_secs(10), Duration::from_millis(1500)),
            (10_000, 1500)
        );
    }
}
