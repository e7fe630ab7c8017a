//! Stand-ins for the `meridian` binary, so the harness's own machinery is
//! tested without the real services.

use std::path::{Path, PathBuf};

/// Serves `node|replicator|router` until SIGTERM (then exits 0); any other
/// subcommand prints a usage error and exits 64. `$1` is the role, `$5` the region.
pub(crate) const SERVES_UNTIL_SIGTERM: &str = r#"case "$1" in
  node|replicator|router) ;;
  *) echo "usage: meridian node|replicator|router --topology FILE --region NAME" >&2; exit 64 ;;
esac
echo "starting $1 for $5" >&2
trap 'echo "got SIGTERM" >&2; exit 0' TERM
echo "MERIDIAN_READY role=$1 region=$5"
while true; do sleep 0.05; done"#;

/// Writes an executable `/bin/sh` script named `meridian` into `directory`.
pub(crate) fn binary(directory: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = directory.join("meridian");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write the fake binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the fake binary executable");
    path
}
