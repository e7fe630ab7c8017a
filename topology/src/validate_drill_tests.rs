//! One test per drill validation rule: each breaks the rule in an otherwise
//! valid drill and checks that the error names the key and the value.

use crate::drill::tests::FULL_DRILL;
use crate::{
    ClientKind, Drill, DrillClient, LinkChange, ProcessAction, ProcessRole, StepAction, Topology,
    TopologyError,
};
use std::path::Path;

/// The demo topology with the full test drill.
fn drilled() -> Topology {
    let text = format!(
        "{}\n{FULL_DRILL}",
        Topology::demo(Path::new("/data")).to_toml_string()
    );
    Topology::from_toml_str(&text, Path::new("/x/t.toml")).unwrap_or_else(|error| panic!("{error}"))
}

fn drill_mut(topology: &mut Topology) -> &mut Drill {
    topology.drill.as_mut().expect("the topology has a drill")
}

/// Validates `topology`, expecting an error about `key` that shows `value`.
#[track_caller]
fn assert_refused(topology: &Topology, key: &str, value: &str) -> String {
    let error = topology.validate().expect_err("the drill breaks a rule");
    let message = error.to_string();
    assert_eq!(error.key(), Some(key), "{message}");
    assert!(
        message.contains(&format!("key {key} = {value}: ")),
        "{message}"
    );
    message
}

fn degrade(change: LinkChange) -> StepAction {
    StepAction::Degrade {
        link: ["eu-west".to_owned(), "us-east".to_owned()],
        change,
    }
}

#[test]
fn full_drill_is_valid() {
    drilled().validate().expect("valid");
}

#[test]
fn the_drill_is_checked_after_the_topics() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.topic = "missing".to_owned();
    topology
        .topics
        .get_mut("demo")
        .expect("the demo topic")
        .queues = 0;
    assert_refused(&topology, "topics.demo.queues", "0");
}

#[test]
fn step_regions_must_exist() {
    let mut topology = drilled();
    drill_mut(&mut topology).steps[0].action = StepAction::Process {
        signal: ProcessAction::Kill,
        region: "mars".to_owned(),
        role: ProcessRole::Node,
    };
    let error = topology.validate().expect_err("unknown region");
    assert!(matches!(error, TopologyError::UnknownRegion { ref name, .. } if name == "mars"));
    assert_eq!(
        error.to_string(),
        "invalid topology: key drill.steps[0].region = \"mars\": unknown region; \
         known regions: eu-west, on-prem, us-east"
    );
}

#[test]
fn step_links_join_two_different_existing_regions() {
    let mut topology = drilled();
    drill_mut(&mut topology).steps[2].action = StepAction::Partition {
        link: ["eu-west".to_owned(), "venus".to_owned()],
        one_way: false,
    };
    let message = assert_refused(&topology, "drill.steps[2].link[1]", "\"venus\"");
    assert!(message.contains("unknown region"), "{message}");

    drill_mut(&mut topology).steps[2].action = StepAction::Heal {
        link: ["us-east".to_owned(), "us-east".to_owned()],
    };
    let message = assert_refused(
        &topology,
        "drill.steps[2].link",
        "[\"us-east\", \"us-east\"]",
    );
    assert!(
        message.ends_with("must name two different regions"),
        "{message}"
    );

    // A pair without a declared link is fine.
    topology
        .links
        .retain(|link| !link.joins("eu-west", "us-east"));
    drill_mut(&mut topology).steps[2].action = StepAction::Partition {
        link: ["eu-west".to_owned(), "us-east".to_owned()],
        one_way: true,
    };
    topology
        .validate()
        .expect("any two regions can be partitioned");
}

#[test]
fn degrade_values_follow_the_link_rules() {
    let mut topology = drilled();
    let cases = [
        (
            LinkChange {
                loss_percent: Some(120.0),
                ..LinkChange::default()
            },
            "loss_percent",
            "120",
        ),
        (
            LinkChange {
                loss_percent: Some(f64::NAN),
                ..LinkChange::default()
            },
            "loss_percent",
            "nan",
        ),
        (
            LinkChange {
                latency_ms: Some(60_001),
                ..LinkChange::default()
            },
            "latency_ms",
            "60001",
        ),
        (
            LinkChange {
                jitter_ms: Some(70_000),
                ..LinkChange::default()
            },
            "jitter_ms",
            "70000",
        ),
        (
            LinkChange {
                bandwidth_kbps: Some(0),
                ..LinkChange::default()
            },
            "bandwidth_kbps",
            "0",
        ),
    ];
    for (change, field, value) in cases {
        drill_mut(&mut topology).steps[3].action = degrade(change);
        assert_refused(&topology, &format!("drill.steps[3].{field}"), value);
    }
    drill_mut(&mut topology).steps[3].action = degrade(LinkChange {
        loss_percent: Some(120.0),
        ..LinkChange::default()
    });
    let message = topology.validate().expect_err("loss above 100").to_string();
    assert!(message.ends_with("must be between 0 and 100"), "{message}");
    drill_mut(&mut topology).steps[3].action = degrade(LinkChange {
        loss_percent: Some(100.0),
        bandwidth_kbps: Some(1),
        ..LinkChange::default()
    });
    topology.validate().expect("boundaries are allowed");
}

#[test]
fn load_region_must_exist() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.region = "mars".to_owned();
    let message = assert_refused(&topology, "drill.load.region", "\"mars\"");
    assert!(
        message.ends_with("unknown region; known regions: eu-west, on-prem, us-east"),
        "{message}"
    );
}

#[test]
fn load_topic_must_be_a_topic() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.topic = "orders".to_owned();
    let message = assert_refused(&topology, "drill.load.topic", "\"orders\"");
    assert!(
        message.ends_with("no such topic; topics: demo"),
        "{message}"
    );
}

#[test]
fn group_follows_rocketmq() {
    for bad in ["", "a b", "ü", &"g".repeat(256)] {
        let mut topology = drilled();
        drill_mut(&mut topology).load.group = bad.to_owned();
        let message = assert_refused(&topology, "drill.load.group", &format!("{bad:?}"));
        assert!(message.contains("[%|a-zA-Z0-9_-]{1,255}"), "{message}");
    }
    let mut topology = drilled();
    drill_mut(&mut topology).load.group = "%Group|v2_-".to_owned();
    topology.validate().expect("a valid group");
}

#[test]
fn load_counts_and_sizes_are_bounded() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.producers = 0;
    drill_mut(&mut topology).load.consumers = 64;
    topology.validate().expect("0 producers and 64 consumers");

    drill_mut(&mut topology).load.producers = 65;
    assert_refused(&topology, "drill.load.producers", "65");

    let mut topology = drilled();
    drill_mut(&mut topology).load.consumers = 65;
    assert_refused(&topology, "drill.load.consumers", "65");

    for (interval, body, key, value) in [
        (0, 256, "drill.load.send_interval_ms", "0"),
        (60_001, 256, "drill.load.send_interval_ms", "60001"),
        (100, 0, "drill.load.body_bytes", "0"),
        (100, 4_194_305, "drill.load.body_bytes", "4194305"),
    ] {
        let mut topology = drilled();
        let load = &mut drill_mut(&mut topology).load;
        load.send_interval_ms = interval;
        load.body_bytes = body;
        assert_refused(&topology, key, value);
    }
}

#[test]
fn durations_are_at_most_an_hour() {
    type Setter = fn(&mut Drill, u64);
    let set: [(&str, Setter); 7] = [
        ("drill.tail_ms", |drill, value| drill.tail_ms = value),
        ("drill.drain_timeout_ms", |drill, value| {
            drill.drain_timeout_ms = value;
        }),
        ("drill.load.warmup_ms", |drill, value| {
            drill.load.warmup_ms = value;
        }),
        ("drill.steps[1].after_ms", |drill, value| {
            drill.steps[1].after_ms = value;
        }),
        ("drill.steps[1].within_ms", |drill, value| {
            drill.steps[1].within_ms = value;
        }),
        ("drill.expect.max_recovery_ms", |drill, value| {
            drill.expect.max_recovery_ms = Some(value);
        }),
        ("drill.steps[4].after_ms", |drill, value| {
            drill.steps[4].after_ms = value;
        }),
    ];
    for (key, set) in set {
        let mut topology = drilled();
        set(drill_mut(&mut topology), 3_600_000);
        topology.validate().expect("an hour is allowed");
        set(drill_mut(&mut topology), 3_600_001);
        let message = assert_refused(&topology, key, "3600001");
        assert!(message.ends_with("(one hour)"), "{message}");
    }
}

#[test]
fn seed_and_counts_fit_in_a_toml_integer() {
    let mut topology = drilled();
    drill_mut(&mut topology).seed = Some(u64::MAX);
    assert_refused(&topology, "drill.seed", &u64::MAX.to_string());
    // Written back saturated rather than failing.
    assert!(
        topology
            .to_toml_string()
            .contains(&format!("seed = {}", i64::MAX))
    );

    let mut topology = drilled();
    drill_mut(&mut topology).expect.max_lost = Some(u64::MAX);
    assert_refused(&topology, "drill.expect.max_lost", &u64::MAX.to_string());

    let mut topology = drilled();
    drill_mut(&mut topology).expect.max_duplicates_after_ack = Some(u64::MAX);
    assert_refused(
        &topology,
        "drill.expect.max_duplicates_after_ack",
        &u64::MAX.to_string(),
    );
}

#[test]
fn at_least_one_step() {
    let mut topology = drilled();
    drill_mut(&mut topology).steps.clear();
    let message = assert_refused(&topology, "drill.steps", "[]");
    assert!(message.contains("at least one step"), "{message}");
}

fn client(name: &str, command: &[&str]) -> DrillClient {
    DrillClient {
        name: name.to_owned(),
        kind: ClientKind::Producer,
        command: command.iter().map(|part| (*part).to_owned()).collect(),
    }
}

#[test]
fn client_commands_are_not_empty() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.clients[1].command.clear();
    let message = assert_refused(&topology, "drill.load.clients[1].command", "[]");
    assert!(message.contains("must name a program"), "{message}");

    let mut topology = drilled();
    drill_mut(&mut topology).load.clients[0] = client("p", &["", "--x"]);
    assert_refused(&topology, "drill.load.clients[0].command[0]", "\"\"");
}

#[test]
fn client_placeholders_are_known() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.clients[0] =
        client("p", &["python3", "c.py", "--endpoints={endpoints}"]);
    let message = assert_refused(
        &topology,
        "drill.load.clients[0].command[2]",
        "\"--endpoints={endpoints}\"",
    );
    assert!(
        message.ends_with(
            "unknown placeholder {endpoints}; allowed placeholders: {endpoint}, {topic}, {group}"
        ),
        "{message}"
    );

    let mut topology = drilled();
    drill_mut(&mut topology).load.clients[0] = client(
        "p",
        &["run", "{topic}{group}{endpoint}", "{\"a\": {}}", "{ x }"],
    );
    topology
        .validate()
        .expect("known placeholders, JSON and spaced braces are fine");
}

#[test]
fn client_names_are_unique_and_well_formed() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.clients[1].name = "python-producer".to_owned();
    let message = assert_refused(
        &topology,
        "drill.load.clients[1].name",
        "\"python-producer\"",
    );
    assert!(
        message.contains("already used by drill.load.clients[0]"),
        "{message}"
    );

    for bad in ["", "a b", "a.b", &"c".repeat(65)] {
        let mut topology = drilled();
        drill_mut(&mut topology).load.clients[0].name = bad.to_owned();
        let message = assert_refused(&topology, "drill.load.clients[0].name", &format!("{bad:?}"));
        assert!(message.contains("[A-Za-z0-9_-]{1,64}"), "{message}");
    }
}

#[test]
fn at_most_64_clients() {
    let mut topology = drilled();
    drill_mut(&mut topology).load.clients = (0..65)
        .map(|index| client(&format!("c{index}"), &["run"]))
        .collect();
    assert_refused(&topology, "drill.load.clients", "65 clients");
}

#[test]
fn validation_errors_in_a_file_name_it() {
    let text = format!(
        "{}\n{}",
        Topology::demo(Path::new("/data")).to_toml_string(),
        FULL_DRILL.replace("loss_percent = 5.0", "loss_percent = 120.0")
    );
    let error = Topology::from_toml_str(&text, Path::new("/x/t.toml")).expect_err("loss");
    assert_eq!(
        error.to_string(),
        "invalid topology /x/t.toml: key drill.steps[3].loss_percent = 120: \
         must be between 0 and 100"
    );
}
