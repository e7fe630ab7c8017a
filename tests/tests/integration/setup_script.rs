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
