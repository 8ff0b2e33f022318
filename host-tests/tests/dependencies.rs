//! What a firmware builds: the codec without its default `caps` feature, and the example
//! firmware, pull in neither serde nor postcard, and no procedural macro but zerocopy's
//! derive (so no `syn` for serde). Checked on the dependency trees `cargo tree` prints, with
//! the default features as the control that the check sees serde and postcard when they are
//! there.

use std::path::Path;
use std::process::Command;

/// The crates `caps` brings in (postcard's own dependencies with it).
const CAPS_ONLY: &[&str] = &[
    "serde",
    "serde_core",
    "serde_derive",
    "postcard",
    "cobs",
    "thiserror",
];

/// The package names in `cargo tree -e normal` of the manifest, with the procedural macros
/// among them.
fn tree(manifest: &Path, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--manifest-path",
        ])
        .arg(manifest)
        .args(args)
        .output()
        .expect("runs cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    let mut names = Vec::new();
    let mut macros = Vec::new();
    for line in text.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if line.contains("(proc-macro)") {
            macros.push(name.to_string());
        }
        names.push(name.to_string());
    }
    names.sort();
    names.dedup();
    macros.sort();
    macros.dedup();
    (names, macros)
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn codec_without_caps_builds_no_serde_or_postcard() {
    let manifest = root().join("Cargo.toml");
    // Control: with its default features the codec has them all (and serde's derive).
    let (names, macros) = tree(&manifest, &["-p", "vmstate"]);
    for c in ["serde", "postcard", "serde_derive"] {
        assert!(names.iter().any(|n| n == c), "{c} missing from {names:?}");
    }
    assert!(macros.iter().any(|m| m == "serde_derive"), "{macros:?}");

    for target in [None, Some("thumbv7em-none-eabihf")] {
        let mut args = vec!["-p", "vmstate", "--no-default-features"];
        if let Some(t) = target {
            args.extend(["--target", t]);
        }
        let (names, macros) = tree(&manifest, &args);
        assert!(names.iter().any(|n| n == "vmstate"), "{names:?}");
        for c in CAPS_ONLY {
            assert!(
                !names.iter().any(|n| n == c),
                "{target:?}: {c} in {names:?}"
            );
        }
        assert_eq!(macros, ["zerocopy-derive"], "{target:?}");
    }
}

#[test]
fn firmware_builds_no_serde_or_postcard() {
    let manifest = root().join("examples/firmware/Cargo.toml");
    let (names, _) = tree(&manifest, &[]);
    assert!(names.iter().any(|n| n == "vmstate"), "{names:?}");
    for c in CAPS_ONLY {
        assert!(!names.iter().any(|n| n == c), "{c} in {names:?}");
    }
}
