//! The real QEMU streams in `host-tests/fixtures/`, shared by the codec's integration tests.
#![allow(dead_code)]

/// Every fixture stream.
pub const FIXTURES: [&str; 3] = [
    "pc-7.2-nodefaults-S.vmstate",
    "pc-7.2-bios.vmstate",
    "pc-7.2-serial.vmstate",
];

/// The second-generation streams written by QEMU 7.2 (`q72-`) and 10.0 (`q10-`)
/// (`host-tests/fixtures/make-fixtures.py`).
pub const FIXTURES_V2: [&str; 9] = [
    "q72-pc-i440fx-7.2.vmstate",
    "q72-pc-q35-7.2.vmstate",
    "q10-pc-i440fx-10.0.vmstate",
    "q10-pc-q35-10.0.vmstate",
    "q10-pc-i440fx-7.2.vmstate",
    "q10-pc-q35-7.2.vmstate",
    "q10-pc-i440fx-7.2-ltim.vmstate",
    "q72-pc-i440fx-7.2-ignore-shared.vmstate",
    "q10-pc-i440fx-10.0-ignore-shared.vmstate",
];

/// The streams of machine types >= 10.0: each carries a SWITCHOVER_START COMMAND record.
pub const WITH_COMMAND: [&str; 3] = [
    "q10-pc-i440fx-10.0.vmstate",
    "q10-pc-q35-10.0.vmstate",
    "q10-pc-i440fx-10.0-ignore-shared.vmstate",
];

/// The bytes of fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../host-tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}
