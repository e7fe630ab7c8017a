//! Tests of reading and writing topology files. Every test that calls
//! `Topology::load` runs inside a figment `Jail`, which serializes them and
//! restores the environment and the current directory afterwards.

#![allow(
    clippy::result_large_err,
    reason = "figment's Jail closures must return figment::Result, whose error is large"
)]

use super::*;
use crate::FlushMode;
use figment::Jail;

const ONE_REGION: &str = r#"
[regions.eu-west]
site = "public"
router = "127.0.0.1:9001"
node = "127.0.0.1:9002"
admin = "127.0.0.1:9003"
replicator = "127.0.0.1:9004"
data_dir = "data/eu-west"

[topics.order-events]
queues = 4
message_types = ["normal"]
replicate_to = ["eu-west"]
"#;

fn parse_error_of(text: &str) -> TopologyError {
    Topology::from_toml_str(text, Path::new("/x/t.toml")).expect_err("the text is refused")
}

#[test]
fn unknown_key_is_refused_naming_file_and_key() {
    let error = parse_error_of(&ONE_REGION.replace("site =", "sitee ="));
    let message = error.to_string();
    assert!(
        matches!(error, TopologyError::Parse { ref key, .. } if key.as_deref() == Some("regions.eu-west.sitee"))
    );
    assert!(message.starts_with(
        "failed to parse topology /x/t.toml: key regions.eu-west.sitee = \"public\": unknown key"
    ));
    assert!(message.contains(
        "allowed keys: site, node, admin, replicator, hubs, router, http, stomp, data_dir, flush, router_mode, storage_memory_mb"
    ));
}

#[test]
fn unknown_top_level_key_is_refused() {
    let error = parse_error_of(&format!("{ONE_REGION}\n[[linkz]]\n"));
    assert_eq!(error.key(), Some("linkz"));
    assert!(
        error
            .to_string()
            .contains("allowed keys: regions, links, topics, groups, drill"),
        "{error}"
    );
}

#[test]
fn missing_key_is_named() {
    let error = parse_error_of(&ONE_REGION.replace("node = \"127.0.0.1:9002\"", ""));
    assert_eq!(
        error.to_string(),
        "failed to parse topology /x/t.toml: key regions.eu-west.node: required key is missing"
    );
}

#[test]
fn wrong_values_are_named_with_what_is_allowed() {
    let error = parse_error_of(
        &ONE_REGION.replace("site = \"public\"", "site = \"public\"\nflush = \"fast\""),
    );
    assert_eq!(
        error.to_string(),
        "failed to parse topology /x/t.toml: key regions.eu-west.flush = \"fast\": allowed values: sync, async"
    );

    let error = parse_error_of(&ONE_REGION.replace("queues = 4", "queues = 70000"));
    assert_eq!(
        error.to_string(),
        "failed to parse topology /x/t.toml: key topics.order-events.queues = 70000: \
         expected an integer from 0 to 65535"
    );

    let error = parse_error_of(&ONE_REGION.replace("\"127.0.0.1:9002\"", "\"localhost:9002\""));
    let message = error.to_string();
    assert!(
        message.contains("key regions.eu-west.node = \"localhost:9002\": invalid socket address"),
        "{message}"
    );
    assert!(message.contains("such as \"127.0.0.1:8082\""), "{message}");

    let error = parse_error_of(&ONE_REGION.replace("[\"normal\"]", "[\"normal\", \"slow\"]"));
    assert_eq!(error.key(), Some("topics.order-events.message_types[1]"));
}

#[test]
fn toml_syntax_error_names_the_file_and_line() {
    let error = parse_error_of("[regions.eu-west\nsite = 1");
    let message = error.to_string();
    assert!(
        message.starts_with("failed to parse topology /x/t.toml: TOML parse error at line 1"),
        "{message}"
    );
    assert_eq!(error.key(), None);
}

#[test]
fn validation_errors_name_the_file() {
    let error = parse_error_of(&ONE_REGION.replace("queues = 4", "queues = 0"));
    assert_eq!(
        error.to_string(),
        "invalid topology /x/t.toml: key topics.order-events.queues = 0: must be between 1 and 1024"
    );
}

#[test]
fn relative_data_dir_is_resolved_against_the_origin_directory() {
    let topology =
        Topology::from_toml_str(ONE_REGION, Path::new("/etc/meridian/t.toml")).expect("valid");
    assert_eq!(
        topology.regions["eu-west"].data_dir,
        Path::new("/etc/meridian/data/eu-west")
    );

    let absolute = ONE_REGION.replace("data/eu-west", "/srv/eu-west");
    let topology =
        Topology::from_toml_str(&absolute, Path::new("/etc/meridian/t.toml")).expect("valid");
    assert_eq!(
        topology.regions["eu-west"].data_dir,
        Path::new("/srv/eu-west")
    );
}

#[test]
fn to_toml_string_round_trips() {
    let demo = Topology::demo(Path::new("/var/lib/meridian"));
    let text = demo.to_toml_string();
    let parsed = Topology::from_toml_str(&text, Path::new("/tmp/anywhere/t.toml")).expect("valid");
    assert_eq!(parsed, demo);

    let hybrid = ONE_REGION
        .replace("data/eu-west", "/srv/eu-west")
        .replace("queues = 4", "queues = 4\nconsume_from = \"latest\"");
    let topology = Topology::from_toml_str(&hybrid, Path::new("/t.toml")).expect("valid");
    let again =
        Topology::from_toml_str(&topology.to_toml_string(), Path::new("/t.toml")).expect("valid");
    assert_eq!(again, topology);
}

#[test]
fn link_emulation_fields_are_read_and_written_back() {
    let demo = Topology::demo(Path::new("/data")).to_toml_string();
    let text = demo.replacen(
        "latency_ms = 40",
        "latency_ms = 40\njitter_ms = 5\nloss_percent = 0.5\nbandwidth_kbps = 100000",
        1,
    );
    assert_ne!(text, demo, "the demo has a 40 ms link");
    let topology = Topology::from_toml_str(&text, Path::new("/t.toml")).expect("valid");
    let link = topology
        .link_between("us-east", "eu-west")
        .expect("the demo links them");
    assert_eq!(
        (link.jitter_ms, link.loss_percent, link.bandwidth_kbps),
        (5, 0.5, Some(100_000))
    );
    let other = topology
        .link_between("eu-west", "on-prem")
        .expect("the demo links them");
    assert_eq!(
        (other.jitter_ms, other.loss_percent, other.bandwidth_kbps),
        (0, 0.0, None)
    );
    let again =
        Topology::from_toml_str(&topology.to_toml_string(), Path::new("/t.toml")).expect("valid");
    assert_eq!(again, topology);
}

#[test]
fn unknown_key_in_an_array_shows_its_value() {
    let demo = Topology::demo(Path::new("/data")).to_toml_string();
    let error = parse_error_of(&demo.replacen("latency_ms = 8", "latency_ms = 8\nlos = 2", 1));
    assert_eq!(error.key(), Some("links[1].los"));
    assert!(
        error
            .to_string()
            .contains("key links[1].los = 2: unknown key; allowed keys: between, latency_ms"),
        "{error}"
    );
}

#[test]
fn a_drill_step_error_names_the_variable_that_caused_it() {
    Jail::expect_with(|jail| {
        let demo = Topology::demo(Path::new("/data")).to_toml_string();
        let drill = "[drill.load]\nregion = \"eu-west\"\ntopic = \"demo\"\n\
                     [[drill.steps]]\naction = \"heal\"\nlink = [\"eu-west\", \"us-east\"]\n";
        jail.create_file("t.toml", &format!("{demo}\n{drill}"))?;
        jail.set_env("MERIDIAN_DRILL__LOAD__PRODUCERS", "4");
        let topology = Topology::load(Path::new("t.toml")).expect("valid");
        assert_eq!(topology.drill.map(|drill| drill.load.producers), Some(4));

        jail.set_env(
            "MERIDIAN_DRILL__STEPS",
            "[{action=\"heal\",link=[\"eu-west\",\"us-east\"],role=\"node\"}]",
        );
        let error = Topology::load(Path::new("t.toml")).expect_err("role is not used by heal");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "failed to parse topology t.toml: key drill.steps[0].role = \"node\" \
                 (from environment variable MERIDIAN_DRILL__STEPS): not used by action \"heal\""
            ),
            "{message}"
        );
        Ok(())
    });
}

#[cfg(unix)]
#[test]
fn to_toml_string_writes_non_utf8_paths_lossily() {
    use std::os::unix::ffi::OsStrExt as _;
    let mut demo = Topology::demo(Path::new("/data"));
    let dir = std::ffi::OsStr::from_bytes(b"/data/\xffeu");
    if let Some(region) = demo.regions.get_mut("eu-west") {
        region.data_dir = PathBuf::from(dir);
    }
    let error = demo.validate().expect_err("non-UTF-8 data_dir is refused");
    assert_eq!(error.key(), Some("regions.eu-west.data_dir"));
    assert!(
        demo.to_toml_string()
            .contains("data_dir = \"/data/\u{fffd}eu\"")
    );
}

#[test]
fn render_key_uses_brackets_for_array_indices() {
    let segments = |list: &[&str]| {
        list.iter()
            .map(|segment| (*segment).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        render_key(&segments(&["links", "0", "between", "1"])),
        "links[0].between[1]"
    );
    assert_eq!(
        render_key(&segments(&["regions", "1", "node"])),
        "regions.1.node"
    );
    assert_eq!(
        render_key(&segments(&["topics", "a|b", "queues"])),
        "topics.\"a|b\".queues"
    );
    assert_eq!(
        render_key(&segments(&["drill", "steps", "2", "link", "0"])),
        "drill.steps[2].link[0]"
    );
    assert_eq!(
        render_key(&segments(&[
            "drill", "load", "clients", "1", "command", "3"
        ])),
        "drill.load.clients[1].command[3]"
    );
}

#[test]
fn load_missing_file_names_the_path() {
    Jail::expect_with(|jail| {
        let path = jail.directory().join("missing.toml");
        let error = Topology::load(&path).expect_err("the file does not exist");
        assert!(
            matches!(error, TopologyError::Read { ref path, .. } if path.ends_with("missing.toml"))
        );
        assert!(error.to_string().starts_with(&format!(
            "failed to read topology file {}: ",
            path.display()
        )));
        Ok(())
    });
}

#[test]
fn load_resolves_relative_data_dir_against_the_file_directory() {
    Jail::expect_with(|jail| {
        jail.create_dir("conf")?;
        jail.create_file("conf/t.toml", ONE_REGION)?;
        let topology = Topology::load(Path::new("conf/t.toml")).expect("valid");
        let expected = std::env::current_dir()
            .expect("current dir")
            .join("conf/data/eu-west");
        assert_eq!(topology.regions["eu-west"].data_dir, expected);
        assert!(topology.regions["eu-west"].data_dir.is_absolute());
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", ONE_REGION)?;
        jail.set_env("MERIDIAN_REGIONS__EU_WEST__FLUSH", "async");
        jail.set_env("MERIDIAN_REGIONS__EU_WEST__NODE", "127.0.0.1:9902");
        jail.set_env("MERIDIAN_REGIONS__EU_WEST__DATA_DIR", "elsewhere");
        jail.set_env("MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES", "16");
        jail.set_env("MERIDIAN_REGIONS__EU_WEST__STORAGE_MEMORY_MB", "64");
        jail.set_env("MERIDIAN_LOG", "debug");
        let topology = Topology::load(Path::new("t.toml")).expect("valid");
        let region = &topology.regions["eu-west"];
        assert_eq!(region.flush, FlushMode::Async);
        assert_eq!(region.storage_memory_mb, 64);
        assert_eq!(region.node.port(), 9902);
        assert_eq!(
            region.data_dir,
            std::env::current_dir()
                .expect("current dir")
                .join("elsewhere")
        );
        assert_eq!(topology.topics["order-events"].queues, 16);
        Ok(())
    });
}

#[test]
fn environment_works_for_region_names_without_dashes() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", &ONE_REGION.replace("eu-west", "euwest1"))?;
        jail.set_env("MERIDIAN_REGIONS__EUWEST1__FLUSH", "async");
        let topology = Topology::load(Path::new("t.toml")).expect("valid");
        assert_eq!(topology.regions["euwest1"].flush, FlushMode::Async);
        Ok(())
    });
}

#[test]
fn environment_unknown_key_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", ONE_REGION)?;
        jail.set_env("MERIDIAN_REGIONS__EU_WEST__SITEE", "public");
        let error = Topology::load(Path::new("t.toml")).expect_err("unknown key");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "failed to parse topology t.toml: key regions.eu-west.sitee = \"public\" \
                 (from environment variable MERIDIAN_REGIONS__EU_WEST__SITEE): unknown key"
            ),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn environment_values_are_validated() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", ONE_REGION)?;
        jail.set_env("MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES", "0");
        let error = Topology::load(Path::new("t.toml")).expect_err("0 queues");
        assert_eq!(
            error.to_string(),
            "invalid topology t.toml: key topics.order-events.queues = 0: must be between 1 and 1024"
        );
        jail.set_env("MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES", "many");
        let error = Topology::load(Path::new("t.toml")).expect_err("not a number");
        let message = error.to_string();
        assert!(
            message.contains(
                "key topics.order-events.queues = \"many\" \
                 (from environment variable MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES)"
            ),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn environment_typo_in_region_name_points_at_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", ONE_REGION)?;
        jail.set_env("MERIDIAN_REGIONS__EUWEST__FLUSH", "async");
        let error =
            Topology::load(Path::new("t.toml")).expect_err("euwest is a new, incomplete region");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "failed to parse topology t.toml: key regions.euwest.site \
                 (from environment variable MERIDIAN_REGIONS__EUWEST__FLUSH): required key is missing"
            ),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn environment_misspelt_top_level_key_is_refused() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", ONE_REGION)?;
        jail.set_env("MERIDIAN_REGION__EU_WEST__FLUSH", "async");
        let error = Topology::load(Path::new("t.toml")).expect_err("region is not a key");
        let message = error.to_string();
        assert!(
            message
                .contains("key region (from environment variable MERIDIAN_REGION__EU_WEST__FLUSH)"),
            "{message}"
        );
        Ok(())
    });
}
