use crate::Topology;

/// Two public regions and two private sites, each behind one hub; `orders`
/// everywhere, `telemetry` in Lyon and its hub only.
fn hybrid() -> Topology {
    Topology::from_toml_str(
        r#"
[regions.eu-west]
site = "public"
router = "127.0.0.1:9301"
node = "127.0.0.1:9302"
admin = "127.0.0.1:9303"
replicator = "127.0.0.1:9304"
data_dir = "/d/eu-west"

[regions.ap-south]
site = "public"
router = "127.0.0.1:9401"
node = "127.0.0.1:9402"
admin = "127.0.0.1:9403"
replicator = "127.0.0.1:9404"
data_dir = "/d/ap-south"

[regions.lyon]
site = "private"
hubs = ["eu-west"]
router = "127.0.0.1:9501"
node = "127.0.0.1:9502"
admin = "127.0.0.1:9503"
data_dir = "/d/lyon"

[regions.pune]
site = "private"
hubs = ["ap-south"]
router = "127.0.0.1:9601"
node = "127.0.0.1:9602"
admin = "127.0.0.1:9603"
data_dir = "/d/pune"

[[links]]
between = ["eu-west", "ap-south"]
latency_ms = 60

[[links]]
between = ["lyon", "eu-west"]
latency_ms = 12

[[links]]
between = ["pune", "ap-south"]
latency_ms = 15

[topics.orders]
queues = 4
message_types = ["normal"]
replicate_to = ["eu-west", "ap-south", "lyon", "pune"]

[topics.telemetry]
queues = 4
message_types = ["normal"]
replicate_to = ["lyon", "eu-west"]
"#,
        std::path::Path::new("/d/hybrid.toml"),
    )
    .expect("valid hybrid topology")
}

#[test]
fn private_sites_connect_only_to_their_hubs_and_dial_them() {
    let topology = hybrid();
    assert_eq!(topology.replication_neighbours("lyon"), ["eu-west"]);
    assert_eq!(
        topology.replication_neighbours("eu-west"),
        ["ap-south", "lyon"]
    );
    assert_eq!(
        topology.replication_neighbours("ap-south"),
        ["eu-west", "pune"]
    );
    assert!(topology.dials("lyon", "eu-west"));
    assert!(
        !topology.dials("eu-west", "lyon"),
        "hubs wait for their sites"
    );
    assert!(topology.dials("eu-west", "ap-south") && topology.dials("ap-south", "eu-west"));
    assert!(!topology.replication_neighbours_are("lyon", "pune"));
    assert!(!topology.dials("lyon", "pune"));
}

#[test]
fn records_reach_every_region_of_the_topic_through_hubs_once() {
    let topology = hybrid();
    let orders = &topology.topics["orders"];
    let from_lyon = topology.forwarding_tree(orders, "lyon");
    assert_eq!(from_lyon.get("eu-west"), Some(&"lyon"));
    assert_eq!(from_lyon.get("ap-south"), Some(&"eu-west"));
    assert_eq!(from_lyon.get("pune"), Some(&"ap-south"));
    assert_eq!(
        from_lyon.len(),
        3,
        "the origin is not a target: {from_lyon:?}"
    );
    let from_eu = topology.forwarding_tree(orders, "eu-west");
    assert_eq!(from_eu.get("lyon"), Some(&"eu-west"));
    assert_eq!(from_eu.get("ap-south"), Some(&"eu-west"));
    assert_eq!(from_eu.get("pune"), Some(&"ap-south"));
    assert!(topology.forwards(orders, "lyon", "ap-south", "pune"));
    assert!(!topology.forwards(orders, "lyon", "eu-west", "pune"));
    // Telemetry never leaves Europe.
    let telemetry = &topology.topics["telemetry"];
    assert_eq!(
        topology.forwarding_parent(telemetry, "lyon", "ap-south"),
        None
    );
    assert_eq!(
        topology.forwarding_parent(telemetry, "lyon", "eu-west"),
        Some("lyon")
    );
}

#[test]
fn neighbours_of_the_origin_get_records_directly_others_by_the_shortest_route() {
    let mut topology = hybrid();
    // A third public region, close to eu-west and far from ap-south.
    let mut us = topology.regions["ap-south"].clone();
    us.router = "127.0.0.1:9701".parse().expect("address");
    us.node = "127.0.0.1:9702".parse().expect("address");
    us.admin = "127.0.0.1:9703".parse().expect("address");
    us.replicator = Some("127.0.0.1:9704".parse().expect("address"));
    us.data_dir = "/d/us-east".into();
    topology.regions.insert("us-east".to_owned(), us);
    topology
        .links
        .push(crate::Link::new("us-east", "eu-west", 5));
    topology
        .links
        .push(crate::Link::new("us-east", "ap-south", 500));
    let orders = topology.topics.get_mut("orders").expect("orders");
    orders.replicate_to.push("us-east".to_owned());
    let orders = topology.topics["orders"].clone();
    topology.validate().expect("valid");
    // Public regions are all neighbours: direct, however long the link.
    assert_eq!(
        topology.forwarding_parent(&orders, "us-east", "ap-south"),
        Some("us-east")
    );
    // Pune is reached through its hub, whichever region the record came from.
    assert_eq!(
        topology.forwarding_parent(&orders, "us-east", "pune"),
        Some("ap-south")
    );
    // From Pune, us-east is nearer through ap-south and eu-west (15 + 60 + 5
    // ms) than through ap-south alone (15 + 500 ms).
    assert_eq!(
        topology.forwarding_parent(&orders, "pune", "us-east"),
        Some("eu-west")
    );
    assert_eq!(
        topology.forwarding_parent(&orders, "pune", "eu-west"),
        Some("ap-south")
    );
}

#[test]
fn a_private_site_without_a_route_to_its_topic_is_refused() {
    let mut topology = hybrid();
    let telemetry = topology.topics.get_mut("telemetry").expect("telemetry");
    telemetry.replicate_to = vec!["lyon".to_owned(), "ap-south".to_owned()];
    let error = topology.validate().expect_err("lyon cannot reach ap-south");
    let text = error.to_string();
    assert!(text.contains("topics.telemetry.replicate_to"), "{text}");
    assert!(
        text.contains("\"lyon\" cannot reach \"ap-south\""),
        "{text}"
    );
    assert!(text.contains("lyon's hubs: eu-west"), "{text}");
}

#[test]
fn a_site_with_two_hubs_is_fed_and_relayed_by_both() {
    // The demo: on-prem behind eu-west and us-east.
    let topology = Topology::demo(std::path::Path::new("/d"));
    let demo = &topology.topics["demo"];
    // Every hub feeds the site, whatever the origin...
    assert!(topology.forwards(demo, "eu-west", "us-east", "on-prem"));
    assert!(topology.forwards(demo, "eu-west", "eu-west", "on-prem"));
    // ...and relays the site's records to the other hub's region.
    assert!(topology.forwards(demo, "on-prem", "eu-west", "us-east"));
    assert!(topology.forwards(demo, "on-prem", "on-prem", "us-east"));
    // Public regions' own records still go once, directly.
    assert!(!topology.forwards(demo, "eu-west", "on-prem", "us-east"));
    // With one hub each (hybrid), nothing is sent twice.
    let hybrid = hybrid();
    let orders = &hybrid.topics["orders"];
    let senders_to = |origin: &str, target: &str| {
        hybrid
            .regions
            .keys()
            .filter(|from| hybrid.forwards(orders, origin, from, target))
            .count()
    };
    for origin in ["eu-west", "ap-south", "lyon", "pune"] {
        for target in ["eu-west", "ap-south", "lyon", "pune"] {
            let expected = usize::from(origin != target);
            assert_eq!(senders_to(origin, target), expected, "{origin} -> {target}");
        }
    }
}

#[test]
fn hubs_are_checked() {
    let mut topology = hybrid();
    topology.regions.get_mut("lyon").expect("lyon").hubs = vec!["pune".to_owned()];
    let text = topology.validate().expect_err("private hub").to_string();
    assert!(
        text.contains("regions.lyon.hubs[0]") && text.contains("must be a public region"),
        "{text}"
    );

    let mut topology = hybrid();
    topology.regions.get_mut("lyon").expect("lyon").hubs.clear();
    let text = topology.validate().expect_err("no hub").to_string();
    assert!(
        text.contains("regions.lyon.hubs") && text.contains("at least one hub"),
        "{text}"
    );

    let mut topology = hybrid();
    topology.regions.get_mut("eu-west").expect("eu").hubs = vec!["ap-south".to_owned()];
    let text = topology
        .validate()
        .expect_err("public with hubs")
        .to_string();
    assert!(text.contains("only private sites have hubs"), "{text}");

    let mut topology = hybrid();
    topology.regions.get_mut("lyon").expect("lyon").replicator =
        Some("127.0.0.1:9504".parse().expect("address"));
    let text = topology.validate().expect_err("listening site").to_string();
    assert!(
        text.contains("regions.lyon.replicator") && text.contains("never listens"),
        "{text}"
    );

    let mut topology = hybrid();
    topology.regions.get_mut("eu-west").expect("eu").replicator = None;
    let text = topology.validate().expect_err("public without").to_string();
    assert!(
        text.contains("regions.eu-west.replicator") && text.contains("(missing)"),
        "{text}"
    );
}

#[test]
fn geo_durability_needs_enough_confirming_neighbours() {
    let mut topology = hybrid();
    let orders = topology.topics.get_mut("orders").expect("orders");
    orders.durability = crate::Durability::Geo;
    orders.geo_copies = 2;
    let text = topology
        .validate()
        .expect_err("lyon has one hub")
        .to_string();
    assert!(text.contains("topics.orders.geo_copies"), "{text}");
    assert!(text.contains("connects to only 1 other region"), "{text}");
}
