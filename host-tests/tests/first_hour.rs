//! `examples/first_hour` (the embedder's first hour, README "Using the library") builds for
//! `thumbv7em-none-eabihf`: the library is `no_std` and allocation-free, so it compiles for a
//! Cortex-M4 that has neither `std` nor `alloc`. (Its own tests run it on the host:
//! `cargo test -p vmstate-first-hour`.)
//!
//! Needs the `thumbv7em-none-eabihf` target: without it the test skips loudly, except in CI
//! (`CI=true`), where it fails.

use std::path::Path;
use std::process::Command;
use vmstate_host_tests::require_rust_target;

#[test]
fn first_hour_builds_for_thumbv7em() {
    const TARGET: &str = "thumbv7em-none-eabihf";
    if !require_rust_target(TARGET) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // A target directory of its own: the outer `cargo test` holds the workspace's.
    let target_dir = root.join("target/first-hour-thumbv7em");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--lib", "-p", "vmstate-first-hour"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        // The outer `cargo test` sets these for the host build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo build for examples/first_hour");
    assert!(
        status.success(),
        "examples/first_hour does not build for {TARGET}"
    );
    let rlib = target_dir
        .join(TARGET)
        .join("release/libvmstate_first_hour.rlib");
    assert!(rlib.is_file(), "{} was not built", rlib.display());
}
