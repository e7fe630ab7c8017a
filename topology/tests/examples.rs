//! Every file in `topology/examples/` parses and validates, including files
//! added later: the directory is listed, not a fixed set of names.

use meridian_topology::Topology;
use std::path::Path;

#[test]
fn every_example_loads_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples directory is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        // An access keys file, which a topology names (`[access] keys_file`).
        if path.to_string_lossy().ends_with("-keys.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example is readable");
        let topology =
            Topology::from_toml_str(&text, &path).unwrap_or_else(|error| panic!("{error}"));
        let again = Topology::from_toml_str(&topology.to_toml_string(), &path)
            .unwrap_or_else(|error| panic!("{} written back: {error}", path.display()));
        assert_eq!(again, topology, "{} round-trips", path.display());
        checked.push(path);
    }
    assert!(
        checked.len() >= 3,
        "expected the shipped examples, found {checked:?}"
    );
}

#[test]
fn hybrid_example_has_private_sites_and_a_latest_topic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hybrid.toml");
    let text = std::fs::read_to_string(&path).expect("example is readable");
    let topology = Topology::from_toml_str(&text, &path).unwrap_or_else(|error| panic!("{error}"));
    let private = topology
        .regions
        .values()
        .filter(|region| region.site == meridian_topology::Site::Private);
    assert_eq!(private.count(), 2);
    assert!(
        topology
            .topics
            .values()
            .any(|topic| topic.consume_from == meridian_topology::ConsumeFrom::Latest)
    );
    assert_eq!(
        topology.distance_ms("factory-lyon", "store-pune"),
        Some(12 + 60 + 15)
    );
}
