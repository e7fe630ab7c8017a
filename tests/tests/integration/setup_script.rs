//! `scripts/setup.sh --check`: what the README's two commands need, detected
//! by the files the build really loads, tested against fake roots.

use std::path::{Path, PathBuf};
use std::process::Command;

fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("setup.sh")
}

/// A fake root holding `files` (empty files, parents created).
fn fake_root(files: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    for file in files {
        let path = root.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        std::fs::write(&path, b"").expect("create file");
    }
    root
}

/// Runs the check against `root`: (exit code, stdout).
fn check(root: &Path) -> (Option<i32>, String) {
    let output = Command::new("bash")
        .arg(setup_script())
        .arg("--check")
        .arg("--root")
        .arg(root)
        .env_remove("LIBCLANG_PATH")
        .output()
        .expect("run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "--check writes only to stdout: {stderr}");
    (output.status.code(), stdout)
}

const HEADERS: &str = "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h";

#[test]
fn only_the_cpp_interface_library_is_missing_libclang() {
    // A new machine: Debian's libclang-cpp14 and nothing else.
    let root = fake_root(&["usr/lib/llvm-14/lib/libclang-cpp.so.14", HEADERS]);
    let (code, stdout) = check(root.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("libclang: missing"), "{stdout}");
    assert!(
        stdout.contains("libclang-cpp.so.14"),
        "names what it found: {stdout}"
    );
    assert!(
        stdout.contains("libclang-dev"),
        "names the package: {stdout}"
    );
}

#[test]
fn the_c_library_with_its_headers_is_present() {
    let root = fake_root(&[
        "usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "usr/lib/llvm-14/lib/libclang.so.1",
        HEADERS,
    ]);
    let (code, stdout) = check(root.path());
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("libclang: present"), "{stdout}");
    assert!(stdout.contains("libclang.so.1"), "{stdout}");
    assert!(stdout.contains("clang headers: present"), "{stdout}");
}

#[test]
fn the_versioned_library_in_the_multiarch_dir_is_present() {
    // libclang1-14 also installs /usr/lib/x86_64-linux-gnu/libclang-14.so.1.
    let root = fake_root(&["usr/lib/x86_64-linux-gnu/libclang-14.so.1"]);
    let (_, stdout) = check(root.path());
    assert!(stdout.contains("libclang: present"), "{stdout}");
    assert!(stdout.contains("libclang-14.so.1"), "{stdout}");
}

#[test]
fn the_library_without_clang_headers_is_not_enough() {
    let root = fake_root(&["usr/lib/llvm-14/lib/libclang.so.1"]);
    let (code, stdout) = check(root.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("libclang: present"), "{stdout}");
    assert!(stdout.contains("clang headers: missing"), "{stdout}");
}

#[test]
fn an_empty_root_is_missing_libclang() {
    let root = fake_root(&[]);
    let (code, stdout) = check(root.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("libclang: missing (no libclang.so*"),
        "{stdout}"
    );
}

#[test]
fn this_machine_has_what_the_build_needs() {
    // The build that produced this test binary needed exactly this.
    let output = Command::new("bash")
        .arg(setup_script())
        .arg("--check")
        .arg("build")
        .output()
        .expect("run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for requirement in [
        "cargo: present",
        "libclang: present",
        "clang headers: present",
    ] {
        assert!(stdout.contains(requirement), "{requirement}: {stdout}");
    }
}

#[test]
fn missing_commands_are_named_with_the_package_that_provides_them() {
    // A PATH with the shell tools the script uses, a C++ compiler and
    // cargo, but no node or npm: the check names both and their packages.
    let bin = tempfile::tempdir().expect("temp dir");
    for tool in ["bash", "dirname", "basename", "readlink", "cargo", "c++"] {
        let found = Command::new("bash")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .expect("run bash");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        assert!(!path.is_empty(), "this machine has {tool}");
        std::os::unix::fs::symlink(&path, bin.path().join(tool)).expect("link");
    }
    let output = Command::new("bash")
        .arg(setup_script())
        .arg("--check")
        .arg("test")
        .env("PATH", bin.path())
        .env("TEST_PYTHON_BASE", "python3")
        .output()
        .expect("run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for expected in [
        "node: missing (runs the official Node.js client in tests) - installs nodejs",
        "npm: missing (installs the official Node.js client) - installs npm",
        "python3: missing",
        "cargo: present",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
}
