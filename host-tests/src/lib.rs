//! Shared helpers for the host integration tests: fixture loading, the VMDESCRIPTION-derived
//! section map (computed with serde_json, independently of the codec), a tiny PRNG, and the
//! policy for tests that need an external peer (QEMU).

use std::path::PathBuf;

/// The real QEMU 7.2 streams in `host-tests/fixtures/` (see its README).
pub const FIXTURES: &[&str] = &[
    "pc-7.2-nodefaults-S.vmstate",
    "pc-7.2-bios.vmstate",
    "pc-7.2-serial.vmstate",
];

/// The second-generation streams in `host-tests/fixtures/` (made by `make-fixtures.py`): QEMU
/// 7.2 (`q72-*`) and QEMU 10.0 (`q10-*`), pc and q35, older machine types on 10.0, the
/// `i8259/ltim` subsection and x-ignore-shared.
pub const FIXTURES_V2: &[&str] = &[
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

/// `vmstate ram --image`'s flat guest-physical image of `input` (the PC layout for its
/// machine type), written to `path` through the library and read back.
pub fn ram_image(input: &vmstate_cli::input::Input, name: &str, path: &std::path::Path) -> Vec<u8> {
    use vmstate_cli::ram::{DEFAULT_INDEX_LIMIT, LayoutOptions, index};
    let ram = index(input, name, DEFAULT_INDEX_LIMIT).unwrap();
    let physical = ram.physical(&LayoutOptions::default()).unwrap();
    let out = std::fs::File::create(path).unwrap();
    ram.write_image(&physical, &out).unwrap();
    drop(out);
    std::fs::read(path).unwrap()
}

/// Path of a fixture file.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Reads a fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// One FULL section as the stream's own description implies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedSection {
    /// `"name"` (the idstr).
    pub idstr: String,
    /// `"instance_id"`.
    pub instance_id: u32,
    /// `"version"`.
    pub version: u32,
    /// Body length implied by the field sizes and subsections.
    pub body_len: usize,
}

/// Body size of a device or subsection object: the sum of its field sizes (× `array_len`) plus,
/// per subsection, `05 | len | name | be32 version` and the subsection's own body.
pub fn described_body_len(obj: &serde_json::Value) -> usize {
    if let Some(size) = obj.get("size").and_then(|s| s.as_u64()) {
        // Old-style handler: one opaque buffer.
        return size as usize;
    }
    let fields: usize = obj["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    let size = f["size"].as_u64().expect("field size") as usize;
                    let n = f.get("array_len").and_then(|a| a.as_u64()).unwrap_or(1) as usize;
                    size * n
                })
                .sum()
        })
        .unwrap_or(0);
    let subs: usize = obj
        .get("subsections")
        .and_then(|s| s.as_array())
        .map(|ss| {
            ss.iter()
                .map(|s| {
                    let name = s["vmsd_name"].as_str().expect("subsection name");
                    1 + 1 + name.len() + 4 + described_body_len(s)
                })
                .sum()
        })
        .unwrap_or(0);
    fields + subs
}

/// The FULL sections the trailer JSON describes, in stream order.
pub fn described_sections(json: &[u8]) -> Vec<DescribedSection> {
    let v: serde_json::Value = serde_json::from_slice(json).expect("trailer JSON");
    v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| DescribedSection {
            idstr: d["name"].as_str().expect("name").to_owned(),
            instance_id: d["instance_id"].as_u64().expect("instance_id") as u32,
            version: d["version"].as_u64().unwrap_or(0) as u32,
            body_len: described_body_len(d),
        })
        .collect()
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish value below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Whether a test that needs an external tool must fail instead of skipping (CI).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the rustup target `target` (e.g. `thumbv7em-none-eabihf`) is installed. Locally a
/// missing target makes the caller skip with a loud message; in CI (`CI=true`) it panics.
pub fn require_rust_target(target: &str) -> bool {
    let out = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let found = out.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == target)
    });
    if !found {
        if in_ci() {
            panic!("the {target} target is required in CI but is not installed");
        }
        eprintln!(
            "\n*** SKIPPING: rustup target {target} is not installed (in CI this is a failure) ***\n"
        );
    }
    found
}

/// Finds `tool` on PATH. Locally a missing tool makes the caller skip with a loud message; in
/// CI (`CI=true`) it panics: no test may skip for want of a peer there.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if in_ci() => panic!("{tool} is required in CI but was not found on PATH"),
        None => {
            eprintln!(
                "\n*** SKIPPING: {tool} not found on PATH (install it; in CI this is a failure) ***\n"
            );
            None
        }
    }
}

/// The two QEMU builds the tests use as peers (the device models' own notion of a build),
/// unpacked side by side by `.ci/install-qemu` (see that script for why apt cannot install
/// both): Debian bookworm's QEMU 7.2 and bookworm-backports' QEMU 10.0.
pub use vmstate_devices::machine::QemuBuild;

/// The folder of `build` under [`qemu_dir`] (`7.2`, `10.0`).
pub fn build_dir(build: QemuBuild) -> String {
    let (major, minor) = build.version();
    format!("{major}.{minor}")
}

/// Where `.ci/install-qemu` puts the builds: `$VMSTATE_QEMU_DIR`, else `target/qemu` in the
/// workspace.
pub fn qemu_dir() -> PathBuf {
    match std::env::var_os("VMSTATE_QEMU_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/qemu"),
    }
}

/// The wrapper that runs `tool` (`qemu-system-x86_64`, `qemu-system-arm`) of `build` with its
/// own firmware and modules. Locally a missing build makes the caller skip with a loud message
/// naming the install command; in CI (`CI=true`) it panics.
pub fn require_qemu(build: QemuBuild, tool: &str) -> Option<PathBuf> {
    let p = qemu_dir().join(build_dir(build)).join("bin").join(tool);
    if p.is_file() {
        return Some(p);
    }
    let what = format!(
        "QEMU {} ({tool}) not found at {}: run `bash .ci/install-qemu`",
        build_dir(build),
        p.display()
    );
    if in_ci() {
        panic!("{what} (required in CI)");
    }
    eprintln!("\n*** SKIPPING: {what} (in CI this is a failure) ***\n");
    None
}

pub mod differential;
pub mod qemu;
