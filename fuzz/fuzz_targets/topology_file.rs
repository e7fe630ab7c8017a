//! Topology files (`meridian_topology::Topology::from_toml_str`: TOML
//! parsing with figment, the error rewriting of `load.rs`, then every check
//! of `validate.rs`) on arbitrary UTF-8. It must never panic, and a
//! topology it accepts must write (`to_toml_string`) TOML that reads back
//! to the same topology, as `to_toml_string` promises for absolute data
//! directories (the origin below makes every relative one absolute).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_topology::Topology;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("/fuzz/topology.toml");
    let Ok(topology) = Topology::from_toml_str(text, origin) else {
        return;
    };
    let written = topology.to_toml_string();
    let again = Topology::from_toml_str(&written, origin)
        .unwrap_or_else(|error| panic!("written topology refused: {error}\n{written}"));
    assert_eq!(again, topology, "written:\n{written}");
});
