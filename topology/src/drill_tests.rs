//! Tests of the drill model: reading, defaults, writing back, and the step
//! shapes refused while parsing (with the exact key).

use super::*;
use crate::{Topology, TopologyError};
use std::path::Path;

/// The demo topology (regions eu-west, us-east, on-prem; topic demo) as TOML.
fn demo_text() -> String {
    Topology::demo(Path::new("/data")).to_toml_string()
}

/// The demo topology followed by `drill`.
fn with_drill(drill: &str) -> String {
    format!("{}\n{drill}", demo_text())
}

/// Every key of a drill, with a step of each kind.
pub(crate) const FULL_DRILL: &str = r#"
[drill]
description = "eu-west's node dies and comes back"
seed = 7
tail_ms = 4000
drain_timeout_ms = 20000

[drill.load]
region = "eu-west"
topic = "demo"
group = "drill-group"
producers = 2
consumers = 3
send_interval_ms = 50
body_bytes = 1024
warmup_ms = 1000

[[drill.load.clients]]
name = "python-producer"
kind = "producer"
command = ["python3", "tests/python/drill_client.py", "--role", "producer", "--endpoints", "{endpoint}", "--topic", "{topic}"]

[[drill.load.clients]]
name = "node-consumer"
kind = "consumer"
command = ["node", "client.js", "--group={group}", "{\"json\": true}"]

[[drill.steps]]
action = "kill"
region = "eu-west"
role = "node"

[[drill.steps]]
after_ms = 3000
when = "recovered"
within_ms = 10000
action = "restart"
region = "eu-west"
role = "replicator"

[[drill.steps]]
action = "partition"
link = ["eu-west", "us-east"]
one_way = true

[[drill.steps]]
action = "degrade"
link = ["us-east", "on-prem"]
latency_ms = 200
jitter_ms = 20
loss_percent = 5.0
bandwidth_kbps = 1000

[[drill.steps]]
when = "caught-up"
action = "heal"
link = ["eu-west", "us-east"]

[drill.expect]
max_lost = 1
max_duplicates_after_ack = 0
max_recovery_ms = 2000
"#;

/// The smallest drill: a load and one step.
const SMALL_DRILL: &str = r#"
[drill.load]
region = "us-east"
topic = "demo"

[[drill.steps]]
action = "stop"
region = "on-prem"
role = "router"
"#;

fn parse(text: &str) -> Result<Topology, TopologyError> {
    Topology::from_toml_str(text, Path::new("/x/t.toml"))
}

fn drill_of(text: &str) -> Drill {
    parse(text)
        .unwrap_or_else(|error| panic!("{error}"))
        .drill
        .expect("the text has a drill")
}

/// Parses the demo with `drill`, expecting a parse error at `key`.
#[track_caller]
fn refused(drill: &str, key: &str) -> String {
    let error = parse(&with_drill(drill)).expect_err("the drill is refused");
    assert!(
        matches!(error, TopologyError::Parse { .. }),
        "a parse error: {error}"
    );
    assert_eq!(error.key(), Some(key), "{error}");
    error.to_string()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|item| (*item).to_owned()).collect()
}

fn link(a: &str, b: &str) -> [String; 2] {
    [a.to_owned(), b.to_owned()]
}

/// [`SMALL_DRILL`] with its step replaced by `step` (the lines after
/// `[[drill.steps]]`).
fn small_with_step(step: &str) -> String {
    let head = SMALL_DRILL
        .split("[[drill.steps]]")
        .next()
        .expect("split yields one part");
    format!("{head}[[drill.steps]]\n{step}\n")
}

#[test]
fn full_drill_is_read() {
    let drill = drill_of(&with_drill(FULL_DRILL));
    assert_eq!(
        drill.description.as_deref(),
        Some("eu-west's node dies and comes back")
    );
    assert_eq!(drill.seed, Some(7));
    assert_eq!((drill.tail_ms, drill.drain_timeout_ms), (4000, 20000));
    let load = &drill.load;
    assert_eq!(
        (
            load.region.as_str(),
            load.topic.as_str(),
            load.group.as_str()
        ),
        ("eu-west", "demo", "drill-group")
    );
    assert_eq!((load.producers, load.consumers), (2, 3));
    assert_eq!((load.send_interval_ms, load.body_bytes), (50, 1024));
    assert_eq!(load.warmup_ms, 1000);
    assert_eq!(load.clients.len(), 2);
    assert_eq!(load.clients[0].kind, ClientKind::Producer);
    assert_eq!(load.clients[1].kind, ClientKind::Consumer);
    assert_eq!(load.clients[1].command[3], "{\"json\": true}");

    let actions: Vec<StepAction> = drill.steps.iter().map(|step| step.action.clone()).collect();
    assert_eq!(
        actions,
        vec![
            StepAction::Process {
                signal: ProcessAction::Kill,
                region: "eu-west".to_owned(),
                role: ProcessRole::Node,
            },
            StepAction::Process {
                signal: ProcessAction::Restart,
                region: "eu-west".to_owned(),
                role: ProcessRole::Replicator,
            },
            StepAction::Partition {
                link: link("eu-west", "us-east"),
                one_way: true,
            },
            StepAction::Degrade {
                link: link("us-east", "on-prem"),
                change: LinkChange {
                    latency_ms: Some(200),
                    jitter_ms: Some(20),
                    loss_percent: Some(5.0),
                    bandwidth_kbps: Some(1000),
                },
            },
            StepAction::Heal {
                link: link("eu-west", "us-east"),
            },
        ]
    );
    let step = &drill.steps[1];
    assert_eq!(
        (step.after_ms, step.when, step.within_ms),
        (3000, Some(StepCondition::Recovered), 10000)
    );
    assert_eq!(drill.steps[4].when, Some(StepCondition::CaughtUp));
    assert_eq!(
        drill.expect,
        DrillExpect {
            max_lost: Some(1),
            max_duplicates_after_ack: Some(0),
            max_recovery_ms: Some(2000),
        }
    );
}

#[test]
fn full_drill_round_trips() {
    let topology = parse(&with_drill(FULL_DRILL)).unwrap_or_else(|error| panic!("{error}"));
    let text = topology.to_toml_string();
    let again = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    assert_eq!(again, topology);
    assert!(text.contains("[drill.load]"), "{text}");
    assert!(text.contains("[[drill.steps]]"), "{text}");
}

#[test]
fn defaults_fill_a_small_drill() {
    let drill = drill_of(&with_drill(SMALL_DRILL));
    assert_eq!(drill.description, None);
    assert_eq!(drill.seed, None);
    assert_eq!((drill.tail_ms, drill.drain_timeout_ms), (3000, 30000));
    assert_eq!(
        drill.load,
        DrillLoad {
            region: "us-east".to_owned(),
            topic: "demo".to_owned(),
            group: "drill".to_owned(),
            producers: 1,
            consumers: 1,
            send_interval_ms: 100,
            body_bytes: 256,
            warmup_ms: 2000,
            clients: Vec::new(),
        }
    );
    assert_eq!(
        drill.steps,
        vec![DrillStep {
            after_ms: 0,
            when: None,
            within_ms: 30000,
            action: StepAction::Process {
                signal: ProcessAction::Stop,
                region: "on-prem".to_owned(),
                role: ProcessRole::Router,
            },
        }]
    );
    assert_eq!(
        drill.expect,
        DrillExpect {
            max_lost: Some(0),
            max_duplicates_after_ack: None,
            max_recovery_ms: None,
        }
    );
    assert_eq!(drill.expect, DrillExpect::default());

    let topology = parse(&with_drill(SMALL_DRILL)).expect("valid");
    assert_eq!(parse(&topology.to_toml_string()).expect("valid"), topology);
}

#[test]
fn partition_is_two_way_unless_one_way() {
    let drill = drill_of(&with_drill(&small_with_step(
        "action = \"partition\"\nlink = [\"on-prem\", \"us-east\"]",
    )));
    assert_eq!(
        drill.steps[0].action,
        StepAction::Partition {
            link: link("on-prem", "us-east"),
            one_way: false,
        }
    );
    assert_eq!(drill.steps[0].action.name(), "partition");
}

#[test]
fn a_topology_without_drill_is_written_as_before() {
    let text = demo_text();
    assert!(!text.contains("drill"), "{text}");
    assert!(!text.contains("jitter_ms"), "{text}");
    assert!(!text.contains("loss_percent"), "{text}");
    assert!(!text.contains("bandwidth_kbps"), "{text}");
    assert_eq!(parse(&text).expect("valid").drill, None);
}

#[test]
fn field_not_used_by_the_action_is_refused() {
    let drill = FULL_DRILL.replace("one_way = true", "one_way = true\nrole = \"node\"");
    let message = refused(&drill, "drill.steps[2].role");
    assert_eq!(
        message,
        "failed to parse topology /x/t.toml: key drill.steps[2].role = \"node\": \
         not used by action \"partition\"; it uses link, one_way"
    );

    let message = refused(
        &small_with_step(
            "action = \"kill\"\nregion = \"eu-west\"\nrole = \"node\"\nlink = [\"eu-west\", \"us-east\"]",
        ),
        "drill.steps[0].link",
    );
    assert!(
        message.contains(
            "key drill.steps[0].link = [\"eu-west\", \"us-east\"]: not used by action \"kill\""
        ),
        "{message}"
    );

    let message = refused(
        &small_with_step("action = \"heal\"\nlink = [\"eu-west\", \"us-east\"]\none_way = false"),
        "drill.steps[0].one_way",
    );
    assert!(
        message.contains("= false: not used by action \"heal\""),
        "{message}"
    );

    let message = refused(
        &small_with_step(
            "action = \"partition\"\nlink = [\"eu-west\", \"us-east\"]\nloss_percent = 2.5",
        ),
        "drill.steps[0].loss_percent",
    );
    assert!(message.contains("= 2.5: not used by action"), "{message}");
}

#[test]
fn field_needed_by_the_action_is_required() {
    let message = refused(
        &small_with_step("action = \"kill\"\nregion = \"eu-west\""),
        "drill.steps[0].role",
    );
    assert_eq!(
        message,
        "failed to parse topology /x/t.toml: key drill.steps[0].role: \
         required key is missing; action \"kill\" needs it"
    );
    refused(
        &small_with_step("action = \"start\"\nrole = \"node\""),
        "drill.steps[0].region",
    );
    refused(&small_with_step("action = \"heal\""), "drill.steps[0].link");
    let message = refused(
        &small_with_step("region = \"eu-west\""),
        "drill.steps[0].action",
    );
    assert!(message.contains("required key is missing"), "{message}");
}

#[test]
fn degrade_must_change_something() {
    let message = refused(
        &small_with_step("action = \"degrade\"\nlink = [\"eu-west\", \"us-east\"]"),
        "drill.steps[0]",
    );
    assert_eq!(
        message,
        "failed to parse topology /x/t.toml: key drill.steps[0]: action \"degrade\" needs \
         at least one of latency_ms, jitter_ms, loss_percent, bandwidth_kbps"
    );
}

#[test]
fn unknown_action_role_condition_and_kind_list_the_allowed_values() {
    let message = refused(
        &small_with_step("action = \"explode\"\nregion = \"eu-west\"\nrole = \"node\""),
        "drill.steps[0].action",
    );
    assert!(
        message.ends_with(
            "key drill.steps[0].action = \"explode\": allowed values: kill, stop, start, \
             restart, partition, heal, degrade"
        ),
        "{message}"
    );
    let message = refused(
        &small_with_step("action = \"kill\"\nregion = \"eu-west\"\nrole = \"broker\""),
        "drill.steps[0].role",
    );
    assert!(
        message.ends_with("= \"broker\": allowed values: node, replicator, router"),
        "{message}"
    );
    let message = refused(
        &small_with_step("when = \"idle\"\naction = \"heal\"\nlink = [\"a\", \"b\"]"),
        "drill.steps[0].when",
    );
    assert!(
        message.ends_with("allowed values: recovered, caught-up"),
        "{message}"
    );
    let message = refused(
        &FULL_DRILL.replace("kind = \"consumer\"", "kind = \"both\""),
        "drill.load.clients[1].kind",
    );
    assert!(
        message.ends_with("allowed values: producer, consumer"),
        "{message}"
    );
}

#[test]
fn unknown_keys_in_a_drill_are_refused() {
    let message = refused(
        &small_with_step("action = \"kill\"\nregion = \"eu-west\"\nrolle = \"node\""),
        "drill.steps[0].rolle",
    );
    assert!(
        message
            .contains("key drill.steps[0].rolle = \"node\": unknown key; allowed keys: after_ms"),
        "{message}"
    );
    let message = refused(
        &SMALL_DRILL.replace("topic = \"demo\"", "topic = \"demo\"\nproducer = 2"),
        "drill.load.producer",
    );
    assert!(message.contains("unknown key"), "{message}");
    let message = refused(
        &format!("{SMALL_DRILL}\n[drill.expect]\nmax_loss = 0\n"),
        "drill.expect.max_loss",
    );
    assert!(message.contains("allowed keys: max_lost"), "{message}");
}

#[test]
fn load_is_required() {
    let message = refused(
        "[drill]\nseed = 1\n[[drill.steps]]\naction = \"heal\"\nlink = [\"a\", \"b\"]\n",
        "drill.load",
    );
    assert!(message.ends_with("required key is missing"), "{message}");
}

#[test]
fn link_needs_exactly_two_regions() {
    let message = refused(
        &small_with_step("action = \"heal\"\nlink = [\"eu-west\"]"),
        "drill.steps[0].link",
    );
    assert!(message.contains("1 element"), "{message}");
}

#[test]
fn other_deserializers_see_the_step_error_in_the_message() {
    let raw = "action = \"partition\"\nlink = [\"a\", \"b\"]\nrole = \"node\"\n";
    let error = toml::from_str::<DrillStep>(raw).expect_err("role is not used");
    assert!(
        error
            .to_string()
            .contains("role = \"node\": not used by action \"partition\""),
        "{error}"
    );
}

#[test]
fn command_placeholders_are_substituted_once() {
    let client = DrillClient {
        name: "c".to_owned(),
        kind: ClientKind::Consumer,
        command: strings(&[
            "run",
            "--endpoints={endpoint}",
            "{topic}/{group}",
            "{\"keep\": 1}",
            "{}",
            "{other}",
        ]),
    };
    assert_eq!(
        client.command_for("127.0.0.1:8081", "{group}", "g"),
        strings(&[
            "run",
            "--endpoints=127.0.0.1:8081",
            "{group}/g",
            "{\"keep\": 1}",
            "{}",
            "{other}",
        ])
    );
}

#[test]
fn placeholders_are_words_in_braces() {
    assert_eq!(next_placeholder("a{b}c"), Some(("a", "b", "c")));
    assert_eq!(next_placeholder("{ x }{y}"), Some(("{ x }", "y", "")));
    assert_eq!(next_placeholder("{\"a\":1}"), None);
    assert_eq!(next_placeholder("{}{{topic}}"), Some(("{}{", "topic", "}")));
    assert_eq!(next_placeholder("{{}"), None);
    assert_eq!(next_placeholder("no braces"), None);
}
