//! The real QEMU 7.2 streams in `host-tests/fixtures/`, shared by the codec's integration tests.
#![allow(dead_code)]

/// Every fixture stream.
pub const FIXTURES: [&str; 3] = [
    "pc-7.2-nodefaults-S.vmstate",
    "pc-7.2-bios.vmstate",
    "pc-7.2-serial.vmstate",
];

/// The bytes of fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../host-tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}
