//! Runs the codec's loom model tests (`codec/tests/loom.rs`), which need the whole crate built
//! with `--cfg loom`, as part of `cargo test --workspace`: a nested cargo invocation with its own
//! target directory, at preemption bound 3 as the issue specifies. The models include the
//! deliberately broken variants, which must be caught.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn loom_models_pass_at_preemption_bound_3() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target").join("loom");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "test",
            "-p",
            "vmstate",
            "--release",
            "--test",
            "loom",
            "--",
            "--test-threads",
            "1",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "loom tests failed:\n{stdout}\n{stderr}"
    );
    // The suite really ran (a cfg mistake would compile it to nothing).
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 4,
        "expected the loom models to run, got:\n{stdout}"
    );
    assert!(
        stdout.contains("is_caught ... ok"),
        "the broken variants must be run and caught:\n{stdout}"
    );
}
