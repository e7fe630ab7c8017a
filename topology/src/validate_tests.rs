//! One test per validation rule: each breaks the rule in an otherwise valid
//! topology and checks that the error names the key and the value.

use crate::{Link, MessageType, Topology, TopologyError};
use std::path::{Path, PathBuf};

fn demo() -> Topology {
    Topology::demo(Path::new("/data"))
}

/// Validates `topology`, expecting an error about `key` that shows `value`.
#[track_caller]
fn assert_refused(topology: &Topology, key: &str, value: &str) -> String {
    let error = topology.validate().expect_err("the topology breaks a rule");
    let message = error.to_string();
    assert_eq!(error.key(), Some(key), "{message}");
    assert!(
        message.contains(&format!("key {key} = {value}: ")),
        "{message}"
    );
    message
}

fn region_mut<'a>(topology: &'a mut Topology, name: &str) -> &'a mut crate::Region {
    topology
        .regions
        .get_mut(name)
        .expect("the demo has this region")
}

fn demo_topic(topology: &mut Topology) -> &mut crate::Topic {
    topology
        .topics
        .get_mut("demo")
        .expect("the demo has this topic")
}

fn rename_region(topology: &mut Topology, from: &str, to: &str) {
    let region = topology.regions.remove(from).expect("the region exists");
    topology.regions.insert(to.to_owned(), region);
    for link in &mut topology.links {
        for end in &mut link.between {
            if end == from {
                *end = to.to_owned();
            }
        }
    }
    for topic in topology.topics.values_mut() {
        for region in &mut topic.replicate_to {
            if region == from {
                *region = to.to_owned();
            }
        }
    }
}

#[test]
fn demo_is_valid() {
    demo().validate().expect("valid");
}

#[test]
fn at_least_one_region() {
    let mut topology = demo();
    topology.regions.clear();
    topology.links.clear();
    topology.topics.clear();
    assert_refused(&topology, "regions", "{}");
}

#[test]
fn region_names_follow_the_pattern() {
    for bad in ["EU-West", "-eu", "eu_west", "eu west", "", &"a".repeat(33)] {
        let mut topology = demo();
        rename_region(&mut topology, "on-prem", bad);
        let key = crate::error::key_segment(bad);
        let message = assert_refused(&topology, &format!("regions.{key}"), &format!("{bad:?}"));
        assert!(message.contains("[a-z0-9][a-z0-9-]{0,31}"), "{message}");
    }
    for good in ["0", "a-", &"z".repeat(32)] {
        let mut topology = demo();
        rename_region(&mut topology, "on-prem", good);
        topology.validate().expect("a valid region name");
    }
}

#[test]
fn tcp_addresses_are_distinct_across_regions() {
    let mut topology = demo();
    region_mut(&mut topology, "us-east").router = "127.0.0.1:8083".parse().expect("address");
    let message = assert_refused(&topology, "regions.us-east.router", "\"127.0.0.1:8083\"");
    assert!(
        message.contains("already used by regions.eu-west.admin"),
        "{message}"
    );
}

#[test]
fn tcp_addresses_are_distinct_within_a_region() {
    let mut topology = demo();
    let region = region_mut(&mut topology, "eu-west");
    region.admin = region.node;
    let message = assert_refused(&topology, "regions.eu-west.admin", "\"127.0.0.1:8082\"");
    assert!(
        message.contains("already used by regions.eu-west.node"),
        "{message}"
    );
}

#[test]
fn replicator_addresses_are_distinct() {
    let mut topology = demo();
    region_mut(&mut topology, "us-east").replicator =
        Some("127.0.0.1:8084".parse().expect("address"));
    let message = assert_refused(
        &topology,
        "regions.us-east.replicator",
        "\"127.0.0.1:8084\"",
    );
    assert!(
        message.contains("already used by regions.eu-west.replicator"),
        "{message}"
    );
}

#[test]
fn replicator_may_share_a_port_with_a_tcp_address() {
    let mut topology = demo();
    let region = region_mut(&mut topology, "eu-west");
    region.replicator = Some(region.node);
    topology.validate().expect("UDP and TCP ports are separate");
}

#[test]
fn addresses_must_be_dialable() {
    let mut topology = demo();
    region_mut(&mut topology, "on-prem").node = "127.0.0.1:0".parse().expect("address");
    assert_refused(&topology, "regions.on-prem.node", "\"127.0.0.1:0\"");

    let mut topology = demo();
    region_mut(&mut topology, "us-east").replicator =
        Some("0.0.0.0:8184".parse().expect("address"));
    assert_refused(&topology, "regions.us-east.replicator", "\"0.0.0.0:8184\"");

    let mut topology = demo();
    region_mut(&mut topology, "on-prem").router = "[::]:8281".parse().expect("address");
    assert_refused(&topology, "regions.on-prem.router", "\"[::]:8281\"");
}

#[test]
fn data_dirs_are_non_empty_and_distinct() {
    let mut topology = demo();
    region_mut(&mut topology, "us-east").data_dir = PathBuf::new();
    assert_refused(&topology, "regions.us-east.data_dir", "\"\"");

    let mut topology = demo();
    region_mut(&mut topology, "us-east").data_dir = PathBuf::from("/data/eu-west");
    let message = assert_refused(&topology, "regions.us-east.data_dir", "\"/data/eu-west\"");
    assert!(
        message.contains("already used by regions.eu-west.data_dir"),
        "{message}"
    );
}

#[test]
fn storage_memory_is_between_16_mib_and_1_tib() {
    for refused in [0, 15, 1024 * 1024 + 1] {
        let mut topology = demo();
        region_mut(&mut topology, "us-east").storage_memory_mb = refused;
        let message = assert_refused(
            &topology,
            "regions.us-east.storage_memory_mb",
            &refused.to_string(),
        );
        assert!(
            message.contains("must be between 16 and 1048576 (MiB)"),
            "{message}"
        );
    }
    for allowed in [16, 1024 * 1024] {
        let mut topology = demo();
        region_mut(&mut topology, "us-east").storage_memory_mb = allowed;
        topology.validate().expect("in range");
    }
}

#[test]
fn links_join_defined_regions() {
    let mut topology = demo();
    topology.links[1].between[1] = "on-perm".to_owned();
    let error = topology.validate().expect_err("unknown region");
    assert!(matches!(error, TopologyError::UnknownRegion { ref name, .. } if name == "on-perm"));
    assert_eq!(
        error.to_string(),
        "invalid topology: key links[1].between[1] = \"on-perm\": unknown region; \
         known regions: eu-west, on-prem, us-east"
    );
}

#[test]
fn links_join_two_different_regions() {
    let mut topology = demo();
    topology.links[2].between = ["us-east".to_owned(), "us-east".to_owned()];
    assert_refused(&topology, "links[2].between", "[\"us-east\", \"us-east\"]");
}

#[test]
fn one_link_per_pair_in_either_order() {
    let mut topology = demo();
    topology.links.push(Link::new("us-east", "eu-west", 3));
    let message = assert_refused(&topology, "links[3].between", "[\"us-east\", \"eu-west\"]");
    assert!(message.contains("links[0]"), "{message}");
}

#[test]
fn link_latency_is_at_most_a_minute() {
    let mut topology = demo();
    topology.links[0].latency_ms = 60_000;
    topology.validate().expect("60 000 ms is allowed");
    topology.links[0].latency_ms = 60_001;
    let message = assert_refused(&topology, "links[0].latency_ms", "60001");
    assert!(message.contains("at most 60000"), "{message}");
}

#[test]
fn link_jitter_is_at_most_a_minute() {
    let mut topology = demo();
    topology.links[1].jitter_ms = 60_000;
    topology.validate().expect("60 000 ms is allowed");
    topology.links[1].jitter_ms = 60_001;
    let message = assert_refused(&topology, "links[1].jitter_ms", "60001");
    assert!(message.contains("at most 60000"), "{message}");
}

#[test]
fn link_loss_is_a_percentage() {
    let mut topology = demo();
    for good in [0.0, 0.5, 100.0] {
        topology.links[0].loss_percent = good;
        topology.validate().expect("loss in range");
    }
    for (bad, shown) in [
        (120.0, "120"),
        (-1.0, "-1"),
        (100.5, "100.5"),
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
    ] {
        topology.links[0].loss_percent = bad;
        let message = assert_refused(&topology, "links[0].loss_percent", shown);
        assert!(message.ends_with("must be between 0 and 100"), "{message}");
    }
}

#[test]
fn link_bandwidth_is_positive_when_given() {
    let mut topology = demo();
    for good in [Some(1), Some(1_000_000_000), None] {
        topology.links[2].bandwidth_kbps = good;
        topology.validate().expect("bandwidth in range");
    }
    for bad in [0, 1_000_000_001, u64::MAX] {
        topology.links[2].bandwidth_kbps = Some(bad);
        let message = assert_refused(&topology, "links[2].bandwidth_kbps", &bad.to_string());
        assert!(message.contains("leave it out for no limit"), "{message}");
    }
}

#[test]
fn links_connect_every_region() {
    let mut topology = demo();
    topology.links.truncate(1);
    let message = assert_refused(&topology, "links", "[[\"eu-west\", \"us-east\"]]");
    assert!(
        message.contains("region \"on-prem\" cannot be reached from \"eu-west\""),
        "{message}"
    );
}

#[test]
fn topic_names_follow_rocketmq() {
    for bad in ["", "a.b", "a b", "ü", &"t".repeat(128)] {
        let mut topology = demo();
        let topic = topology.topics.remove("demo").expect("demo topic");
        topology.topics.insert(bad.to_owned(), topic);
        let key = format!("topics.{}", crate::error::key_segment(bad));
        let message = assert_refused(&topology, &key, &format!("{bad:?}"));
        assert!(message.contains("^[%|a-zA-Z0-9_-]{1,127}$"), "{message}");
    }
    let mut topology = demo();
    let topic = topology.topics.remove("demo").expect("demo topic");
    topology
        .topics
        .insert("Order%Events|v2_-".to_owned(), topic.clone());
    topology.topics.insert("t".repeat(127), topic);
    topology.validate().expect("valid topic names");
}

#[test]
fn reserved_topic_prefixes_are_refused() {
    for reserved in ["%RETRY%group", "%DLQ%group", "rmq_sys_trace"] {
        let mut topology = demo();
        let topic = topology.topics.remove("demo").expect("demo topic");
        topology.topics.insert(reserved.to_owned(), topic);
        let key = format!("topics.{}", crate::error::key_segment(reserved));
        let message = assert_refused(&topology, &key, &format!("{reserved:?}"));
        assert!(message.contains("reserved"), "{message}");
    }
}

#[test]
fn topic_queues_between_1_and_1024() {
    let mut topology = demo();
    for good in [1, 1024] {
        demo_topic(&mut topology).queues = good;
        topology.validate().expect("queues in range");
    }
    for bad in [0, 1025] {
        demo_topic(&mut topology).queues = bad;
        let message = assert_refused(&topology, "topics.demo.queues", &bad.to_string());
        assert!(message.ends_with("must be between 1 and 1024"), "{message}");
    }
}

#[test]
fn message_types_non_empty_and_distinct() {
    let mut topology = demo();
    demo_topic(&mut topology).message_types.clear();
    let message = assert_refused(&topology, "topics.demo.message_types", "[]");
    assert!(
        message.contains("normal, fifo, delay, transaction"),
        "{message}"
    );

    let mut topology = demo();
    demo_topic(&mut topology)
        .message_types
        .push(MessageType::Fifo);
    assert_refused(&topology, "topics.demo.message_types[4]", "\"fifo\"");
}

#[test]
fn replicate_to_non_empty() {
    let mut topology = demo();
    demo_topic(&mut topology).replicate_to.clear();
    let message = assert_refused(&topology, "topics.demo.replicate_to", "[]");
    assert!(message.contains("eu-west, on-prem, us-east"), "{message}");
}

#[test]
fn replicate_to_distinct() {
    let mut topology = demo();
    demo_topic(&mut topology)
        .replicate_to
        .push("us-east".to_owned());
    assert_refused(&topology, "topics.demo.replicate_to[3]", "\"us-east\"");
}

#[test]
fn replicate_to_defined_regions() {
    let mut topology = demo();
    demo_topic(&mut topology).replicate_to[0] = "eu-wset".to_owned();
    let error = topology.validate().expect_err("unknown region");
    assert!(matches!(error, TopologyError::UnknownRegion { .. }));
    let message = assert_refused(&topology, "topics.demo.replicate_to[0]", "\"eu-wset\"");
    assert!(
        message.ends_with("unknown region; known regions: eu-west, on-prem, us-east"),
        "{message}"
    );
}

#[test]
fn geo_durability_needs_copies_in_other_regions() {
    let mut topology = demo();
    demo_topic(&mut topology).durability = crate::Durability::Geo;
    demo_topic(&mut topology).geo_copies = 2;
    topology
        .validate()
        .expect("two other regions can hold copies");
    demo_topic(&mut topology).geo_copies = 3;
    let error = topology.validate().expect_err("only two other regions");
    assert!(
        error.to_string().contains("topics.demo.geo_copies = 3"),
        "{error}"
    );
    demo_topic(&mut topology).geo_copies = 0;
    assert!(topology.validate().is_err(), "0 copies");
    demo_topic(&mut topology).geo_copies = 1;
    demo_topic(&mut topology).replicate_to = vec!["eu-west".to_owned()];
    let error = topology.validate().expect_err("no other region");
    assert!(
        error.to_string().contains("topics.demo.durability"),
        "{error}"
    );
}

#[test]
fn groups_are_checked_by_key() {
    let mut topology = demo();
    topology.groups.insert(
        "billing".to_owned(),
        crate::Group {
            max_attempts: 0,
            ..crate::Group::default()
        },
    );
    let error = topology.validate().expect_err("max_attempts 0");
    assert_eq!(error.key(), Some("groups.billing.max_attempts"));

    let mut topology = demo();
    topology.groups.insert(
        "billing".to_owned(),
        crate::Group {
            retry_backoff_ms: vec![1_000, 10],
            ..crate::Group::default()
        },
    );
    let error = topology.validate().expect_err("a 10 ms delay");
    assert_eq!(error.key(), Some("groups.billing.retry_backoff_ms[1]"));
    assert!(error.to_string().contains("1 s to 12 h"), "{error}");

    let mut topology = demo();
    topology
        .groups
        .insert("bad name".to_owned(), crate::Group::default());
    let error = topology.validate().expect_err("a space");
    assert!(
        error.to_string().contains("group names must match"),
        "{error}"
    );

    let mut topology = demo();
    topology
        .groups
        .insert("billing".to_owned(), crate::Group::default());
    topology.validate().expect("defaults are valid");
}
