//! STOMP destinations and hosts as RocketMQ topics, groups and namespaces,
//! without I/O.
//!
//! STOMP leaves destinations opaque; Meridian follows the brokers its users
//! know (ActiveMQ, RabbitMQ): `/queue/NAME` is point-to-point (one shared
//! consumer group `stomp_NAME`, competing consumers across connections and
//! regions), `/topic/NAME` is publish-subscribe (each subscription a
//! consumer of its own in group `stomp_topic_NAME`, starting at the topic's
//! end), a bare `NAME` is a queue. All three send to RocketMQ topic NAME.
//! `/temp-queue/`, `/exchange/` and other prefixes are refused.
//!
//! A `host` that is no host name (not an IP address, not `localhost`, no
//! `.`), such as `MQ_INST_1`, is an instance namespace NS: topic and group
//! names become `NS%NAME`, RocketMQ 4's namespace convention.

/// Longest topic name (RocketMQ's rule).
const TOPIC_NAME_MAX_BYTES: usize = 127;
/// Longest consumer group name (RocketMQ's rule).
const GROUP_NAME_MAX_BYTES: usize = 255;
/// Separates an instance namespace from a name.
const NAMESPACE_SEPARATOR: char = '%';

/// Point-to-point or publish-subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue,
    Topic,
}

/// A destination a client named: its kind and its topic name (before any
/// namespace is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) kind: Kind,
    pub(crate) name: String,
}

impl Destination {
    /// The destination `text`, or why it is not one Meridian serves.
    pub(crate) fn parse(text: &str) -> Result<Destination, &'static str> {
        let (kind, name) = if let Some(name) = text.strip_prefix("/queue/") {
            (Kind::Queue, name)
        } else if let Some(name) = text.strip_prefix("/topic/") {
            (Kind::Topic, name)
        } else if text.starts_with('/') {
            return Err("only /queue/NAME, /topic/NAME and NAME destinations are served");
        } else {
            (Kind::Queue, text)
        };
        check_name(name, TOPIC_NAME_MAX_BYTES)?;
        Ok(Destination {
            kind,
            name: name.to_owned(),
        })
    }

    /// The shared consumer group of this destination (`stomp_NAME` or
    /// `stomp_topic_NAME`), before any namespace.
    pub(crate) fn default_group(&self) -> String {
        match self.kind {
            Kind::Queue => format!("stomp_{}", self.name),
            Kind::Topic => format!("stomp_topic_{}", self.name),
        }
    }
}

/// Checks a consumer group a client named (`consumer-group` header).
pub(crate) fn check_group(name: &str) -> Result<(), &'static str> {
    check_name(name, GROUP_NAME_MAX_BYTES)
}

fn check_name(name: &str, max_bytes: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > max_bytes {
        return Err(if max_bytes == TOPIC_NAME_MAX_BYTES {
            "topic names have at most 127 characters"
        } else {
            "group names have at most 255 characters"
        });
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'%' | b'|' | b'_' | b'-'))
    {
        return Err("names consist of letters, digits, '%', '|', '_' and '-' (RocketMQ's rule)");
    }
    Ok(())
}

/// The instance namespace a CONNECT frame's `host` header names, if any.
pub(crate) fn namespace_of_host(host: Option<&str>) -> Option<String> {
    let host = host?.trim();
    let names_a_host = host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || host.contains(['.', ':', '[']);
    let namespace_chars = host
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'));
    (!names_a_host && namespace_chars).then(|| host.to_owned())
}

/// `name` in `namespace`: `NS%name`, unless it is already in it or is a
/// system name (`%DLQ%…`, `%RETRY%…`).
pub(crate) fn in_namespace(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace)
            if !name.starts_with(NAMESPACE_SEPARATOR)
                && !name
                    .strip_prefix(namespace)
                    .is_some_and(|rest| rest.starts_with(NAMESPACE_SEPARATOR)) =>
        {
            format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
        }
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Kind, String) {
        let destination = Destination::parse(text).expect("a valid destination");
        (destination.kind, destination.name)
    }

    #[test]
    fn queues_topics_and_bare_names() {
        assert_eq!(parsed("/queue/demo"), (Kind::Queue, "demo".to_owned()));
        assert_eq!(parsed("/topic/demo"), (Kind::Topic, "demo".to_owned()));
        assert_eq!(parsed("demo"), (Kind::Queue, "demo".to_owned()));
        assert_eq!(parsed("NS%demo"), (Kind::Queue, "NS%demo".to_owned()));
    }

    #[test]
    fn other_destinations_are_refused() {
        for bad in [
            "",
            "/queue/",
            "/topic/",
            "/temp-queue/x",
            "/exchange/amq.topic/k",
            "/queue/a/b",
            "/queue/a b",
            "a.b",
            "/queue/ümlaut",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Destination::parse(&format!("/queue/{}", "a".repeat(127))).is_ok());
        assert!(Destination::parse(&format!("/queue/{}", "a".repeat(128))).is_err());
    }

    #[test]
    fn groups_by_kind() {
        let queue = Destination::parse("/queue/orders").expect("valid");
        assert_eq!(queue.default_group(), "stomp_orders");
        let topic = Destination::parse("/topic/orders").expect("valid");
        assert_eq!(topic.default_group(), "stomp_topic_orders");
        assert!(check_group("GID_1").is_ok());
        assert!(check_group("").is_err());
        assert!(check_group("a@b").is_err());
        assert!(check_group(&"g".repeat(256)).is_err());
    }

    #[test]
    fn only_a_bare_word_host_is_a_namespace() {
        assert_eq!(
            namespace_of_host(Some("MQ_INST_1")),
            Some("MQ_INST_1".to_owned())
        );
        assert_eq!(
            namespace_of_host(Some("tenant-a")),
            Some("tenant-a".to_owned())
        );
        for host in [
            None,
            Some(""),
            Some("localhost"),
            Some("LocalHost"),
            Some("127.0.0.1"),
            Some("::1"),
            Some("[::1]"),
            Some("broker.example.com"),
            Some("localhost:61613"),
            Some("a%b"),
            Some("a b"),
        ] {
            assert_eq!(namespace_of_host(host), None, "{host:?}");
        }
    }

    #[test]
    fn names_in_a_namespace() {
        assert_eq!(in_namespace(None, "demo"), "demo");
        assert_eq!(in_namespace(Some("NS"), "demo"), "NS%demo");
        assert_eq!(in_namespace(Some("NS"), "NS%demo"), "NS%demo");
        assert_eq!(in_namespace(Some("NS"), "NSX%demo"), "NS%NSX%demo");
        assert_eq!(in_namespace(Some("NS"), "%DLQ%g"), "%DLQ%g");
        assert_eq!(in_namespace(Some("NS"), "stomp_demo"), "NS%stomp_demo");
    }
}
