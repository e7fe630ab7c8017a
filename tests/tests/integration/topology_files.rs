//! Broken topology files are refused with exit code 2 and a message that names
//! the file and the key.

use meridian_tests::meridian_topology::FlushMode;
use meridian_tests::{run_meridian, topology_with_held_ports};
use std::path::Path;
use std::time::Duration;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

struct BrokenFile {
    name: &'static str,
    contents: String,
    /// The key the error must name; `None` for a syntax error.
    key: Option<&'static str>,
}

fn broken_files(directory: &Path) -> Vec<BrokenFile> {
    // Only `meridian check` reads these files; the ports need not stay held.
    let (topology, _ports) =
        topology_with_held_ports(2, directory, FlushMode::Async).expect("a valid base topology");
    let valid = toml::to_string(&topology).expect("serialize the base topology");

    let mut with_unknown_key: toml::Table =
        toml::from_str(&valid).expect("parse the base topology");
    with_unknown_key
        .get_mut("regions")
        .and_then(|regions| regions.get_mut("a"))
        .and_then(toml::Value::as_table_mut)
        .expect("the base topology has region a")
        .insert("colour".to_owned(), toml::Value::String("blue".to_owned()));

    // Access keys whose internal key has no `admin` grant.
    let keys_file = directory.join("keys-without-admin.toml");
    std::fs::write(
        &keys_file,
        "[[keys]]\nid = \"internal\"\nsecret = \"s\"\nallow = [{ actions = [\"pub\"], topics = [\"*\"] }]\n",
    )
    .expect("write the keys file");
    let mut with_weak_internal_key = topology.clone();
    with_weak_internal_key.access = Some(meridian_tests::meridian_topology::Access {
        keys_file,
        internal_key: "internal".to_owned(),
    });

    let mut with_zero_queues = topology.clone();
    for topic in with_zero_queues.topics.values_mut() {
        topic.queues = 0;
    }

    vec![
        BrokenFile {
            name: "invalid-syntax.toml",
            contents: format!("{valid}\n[regions.a\nnode = \n"),
            key: None,
        },
        BrokenFile {
            name: "unknown-key.toml",
            contents: toml::to_string(&with_unknown_key).expect("serialize"),
            key: Some("colour"),
        },
        BrokenFile {
            name: "zero-queues.toml",
            contents: toml::to_string(&with_zero_queues).expect("serialize"),
            key: Some("queues"),
        },
        BrokenFile {
            name: "internal-key-without-admin.toml",
            contents: toml::to_string(&with_weak_internal_key).expect("serialize"),
            key: Some("access.internal_key"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_topology_is_refused_with_exit_code_2() {
    let directory = tempfile::tempdir().expect("a temp dir");
    let mut failures = Vec::new();
    for file in broken_files(directory.path()) {
        let path = directory.path().join(file.name);
        std::fs::write(&path, &file.contents).expect("write the broken topology");
        for role in ["node", "replicator", "router"] {
            let args = [
                role.as_ref(),
                "--topology".as_ref(),
                path.as_os_str(),
                "--region".as_ref(),
                "a".as_ref(),
            ];
            let output = run_meridian(args, COMMAND_TIMEOUT)
                .await
                .expect("run meridian on a broken topology");
            let mut problems = Vec::new();
            if output.code() != Some(2) {
                problems.push(format!("exit code {:?}, expected 2", output.code()));
            }
            if !output.stderr.contains(file.name) {
                problems.push(format!("stderr does not name the file {}", file.name));
            }
            if let Some(key) = file.key
                && !output.stderr.contains(key)
            {
                problems.push(format!("stderr does not name the key `{key}`"));
            }
            if output.stderr.contains("panicked") {
                problems.push("it panicked".to_owned());
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "`meridian {role}` on {}: {}\n{output}",
                    file.name,
                    problems.join("; ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "broken topologies were not refused properly:\n{}",
        failures.join("\n\n")
    );
}

/// Every example topology (and the keys file it names) passes `meridian
/// check`.
#[tokio::test(flavor = "multi_thread")]
async fn every_example_topology_passes_meridian_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/examples");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&examples).expect("list the examples") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if !name.ends_with(".toml") || name.ends_with("-keys.toml") {
            continue;
        }
        let args = ["check".as_ref(), "--topology".as_ref(), path.as_os_str()];
        let output = run_meridian(args, COMMAND_TIMEOUT)
            .await
            .expect("run meridian check");
        if output.code() != Some(0) {
            failures.push(format!("{name}: {output}"));
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} example topologies found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
