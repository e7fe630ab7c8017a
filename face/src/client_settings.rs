//! The server's answer to a client's `Settings` on the Telemetry stream.
//!
//! Official clients depend on this reply (see shared/protocols/rocketmq-grpc.md):
//! Python copies `publishing.max_body_size` (0 would refuse every send), Node
//! asserts an exponential back-off policy for producers and needs
//! `receive_batch_size` and `long_polling_timeout` for consumers. The reply
//! echoes what the client sent and fills in the server's values; a
//! consumer's retry policy (max attempts, back-off) is its group's
//! (`[groups.NAME]` in the topology, [`meridian_topology::Group`]).

use meridian_proto::prost_types::Duration;
use meridian_proto::rocketmq::v2::{
    Code, CustomizedBackoff, ExponentialBackoff, Metric, RetryPolicy, Settings, Status,
    TelemetryCommand, retry_policy, settings::PubSub,
};
use meridian_topology::Group;

/// Producer retry attempts advertised to clients.
pub const PRODUCER_MAX_ATTEMPTS: i32 = 3;
/// Messages per receive advertised to push consumers.
pub const RECEIVE_BATCH_SIZE: i32 = 32;
/// Long-polling time advertised to push consumers, in seconds.
pub const LONG_POLLING_TIMEOUT_SECONDS: i64 = 20;

/// A business status with the given code and message.
///
/// Codes added to the API after the oldest supported client (the Rust client
/// 5.0.0, which panics on a code it cannot decode) are replaced by the generic
/// code of their class, keeping the message. This is the one place that guard lives.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    let code = if known_to_oldest_client(code) {
        code
    } else if (code as i32) < 50000 {
        Code::BadRequest
    } else {
        Code::InternalError
    };
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// Whether the Rust client 5.0.0 can decode this code.
pub fn known_to_oldest_client(code: Code) -> bool {
    !matches!(
        code,
        Code::IllegalOffset
            | Code::IllegalLiteTopic
            | Code::InvalidClientProperties
            | Code::OffsetNotFound
            | Code::MessageBodyEmpty
            | Code::LiteTopicQuotaExceeded
            | Code::LiteSubscriptionQuotaExceeded
    )
}

/// The OK status.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

fn seconds(seconds: i64) -> Duration {
    Duration { seconds, nanos: 0 }
}

fn millis(millis: i64) -> Duration {
    Duration {
        seconds: millis / 1000,
        nanos: i32::try_from((millis % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// Merges a client's settings with the server's values, as the reference
/// proxy does; `group_policy` gives a consumer group's policies.
pub fn merge(mut settings: Settings, group_policy: impl Fn(&str) -> Group) -> Settings {
    match settings.pub_sub.as_mut() {
        Some(PubSub::Publishing(publishing)) => {
            publishing.max_body_size =
                i32::try_from(meridian_proto::MAX_BODY_BYTES).unwrap_or(i32::MAX);
            publishing.validate_message_type = true;
            settings.backoff_policy = Some(RetryPolicy {
                max_attempts: PRODUCER_MAX_ATTEMPTS,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    ExponentialBackoff {
                        initial: Some(millis(10)),
                        max: Some(seconds(1)),
                        multiplier: 2.0,
                    },
                )),
            });
        }
        Some(PubSub::Subscription(subscription)) => {
            subscription.receive_batch_size = Some(RECEIVE_BATCH_SIZE);
            subscription.long_polling_timeout = Some(seconds(LONG_POLLING_TIMEOUT_SECONDS));
            let group = subscription
                .group
                .as_ref()
                .map(|group| group.name.trim())
                .unwrap_or_default();
            let policy = group_policy(group);
            subscription.fifo = Some(policy.fifo);
            let next = policy
                .retry_backoff_ms
                .iter()
                .map(|delay| millis(i64::try_from(*delay).unwrap_or(i64::MAX)))
                .collect();
            settings.backoff_policy = Some(RetryPolicy {
                max_attempts: i32::try_from(policy.max_attempts).unwrap_or(i32::MAX),
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    CustomizedBackoff { next },
                )),
            });
        }
        None => {}
    }
    settings.metric = Some(Metric {
        on: false,
        endpoints: None,
    });
    settings
}

/// The Telemetry command answering a client's settings.
pub fn reply(settings: Settings, group_policy: impl Fn(&str) -> Group) -> TelemetryCommand {
    TelemetryCommand {
        status: Some(ok()),
        command: Some(
            meridian_proto::rocketmq::v2::telemetry_command::Command::Settings(merge(
                settings,
                group_policy,
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::rocketmq::v2::{Publishing, Subscription};

    #[test]
    fn codes_unknown_to_the_rust_client_are_downgraded() {
        assert_eq!(
            status(Code::MessageBodyEmpty, "empty").code,
            Code::BadRequest as i32
        );
        assert_eq!(
            status(Code::TopicNotFound, "t").code,
            Code::TopicNotFound as i32
        );
    }

    #[test]
    fn producer_reply_carries_body_limit_and_exponential_backoff() {
        let settings = Settings {
            pub_sub: Some(PubSub::Publishing(Publishing::default())),
            ..Settings::default()
        };
        let merged = merge(settings, |_| Group::default());
        let Some(PubSub::Publishing(publishing)) = merged.pub_sub else {
            panic!("publishing settings lost");
        };
        assert_eq!(publishing.max_body_size, 4 * 1024 * 1024);
        assert!(matches!(
            merged.backoff_policy.and_then(|policy| policy.strategy),
            Some(retry_policy::Strategy::ExponentialBackoff(_))
        ));
    }

    #[test]
    fn consumer_reply_carries_batch_size_and_polling_time() {
        let settings = Settings {
            pub_sub: Some(PubSub::Subscription(Subscription::default())),
            ..Settings::default()
        };
        let Some(PubSub::Subscription(subscription)) =
            merge(settings, |_| Group::default()).pub_sub
        else {
            panic!("subscription settings lost");
        };
        assert_eq!(subscription.receive_batch_size, Some(32));
        assert_eq!(subscription.long_polling_timeout, Some(seconds(20)));
        assert_eq!(subscription.fifo, Some(false));
    }

    #[test]
    fn consumer_reply_carries_the_groups_retry_policy() {
        let settings = Settings {
            pub_sub: Some(PubSub::Subscription(Subscription {
                group: Some(meridian_proto::rocketmq::v2::Resource {
                    name: "billing".to_owned(),
                    ..Default::default()
                }),
                ..Subscription::default()
            })),
            ..Settings::default()
        };
        let merged = merge(settings, |group| Group {
            max_attempts: if group == "billing" { 3 } else { 17 },
            retry_backoff_ms: vec![1_000, 2_500],
            ..Group::default()
        });
        let policy = merged.backoff_policy.expect("a retry policy");
        assert_eq!(policy.max_attempts, 3);
        let Some(retry_policy::Strategy::CustomizedBackoff(backoff)) = policy.strategy else {
            panic!("customized back-off expected");
        };
        assert_eq!(backoff.next, vec![seconds(1), millis(2_500)]);
    }
}
