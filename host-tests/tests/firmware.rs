//! The example firmware (`examples/firmware`, thumbv7em-none-eabihf) on an emulated Cortex-M4:
//! build it, run it under `qemu-system-arm` (MPS2-AN386, semihosting), decode the v3 and v4
//! streams it prints as hex with the host library and check they equal the host encoders'
//! output for the same states.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target: without them the test skips
//! loudly, except in CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use vmstate::stream::{Record, Records, Schemas};
use vmstate::v4::load_section as load_v4;
use vmstate::v4::wire::{Record4, Records4};
use vmstate_devices::i8254::Pit;
use vmstate_devices::i8259::Pic;
use vmstate_devices::rtc::Rtc;
use vmstate_devices::{i8254, i8259, rtc};
use vmstate_host_tests::{QemuBuild, require_qemu, require_rust_target, require_tool};
use zerocopy::FromZeros;

/// The states and the stream writer, compiled here exactly as the firmware compiles them.
#[path = "../../examples/firmware/src/stream.rs"]
#[allow(dead_code)]
mod firmware_stream;

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/firmware")
}

/// Builds the firmware in release mode (in its own workspace and target directory,
/// `examples/firmware/target`) and returns the ELF.
fn build_firmware() -> PathBuf {
    let dir = firmware_dir();
    let status = Command::new("cargo")
        .args(["build", "--release"])
        .current_dir(&dir)
        // The outer `cargo test` sets these for the host build; the firmware sets its own.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo build for the firmware");
    assert!(status.success(), "firmware build failed");
    dir.join("target/thumbv7em-none-eabihf/release/vmstate-firmware")
}

fn parse_hex(text: &str) -> Vec<u8> {
    let hex = text.trim();
    assert!(hex.len().is_multiple_of(2), "odd hex length {}", hex.len());
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[test]
fn firmware_stream_on_cortex_m4_equals_host_encoding() {
    let Some(timeout) = require_tool("timeout") else {
        return;
    };
    let Some(qemu) = require_qemu(QemuBuild::V10_0, "qemu-system-arm") else {
        return;
    };
    if !require_rust_target("thumbv7em-none-eabihf") {
        return;
    }
    let elf = build_firmware();
    let out = Command::new(timeout)
        .arg("60")
        .arg(qemu)
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&elf)
        .output()
        .expect("run qemu-system-arm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firmware exited with {:?}; stdout: {stdout}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per stream: {stdout}");
    let bytes = parse_hex(lines[0]);
    let v4_bytes = parse_hex(lines[1]);

    // The host encoders' output for the same states.
    let states = firmware_stream::states();
    let mut buf = [0u8; 1024];
    let n = firmware_stream::encode(&states, &mut buf).expect("host encodes");
    assert_eq!(bytes, &buf[..n], "firmware and host v3 encodings differ");
    let n = firmware_stream::encode_v4(&states, &mut buf).expect("host encodes v4");
    assert_eq!(v4_bytes, &buf[..n], "firmware and host v4 encodings differ");

    // Decode what the firmware printed with the host library: walk it with the device tables
    // as resolver and load every section into a fresh state.
    let tables = [&rtc::VMSD, &i8259::VMSD, &i8254::VMSD];
    let mut scratch = [0u8; 512];
    let mut rtc_state = Rtc::new_zeroed();
    let mut pics = [Pic::MASTER, Pic::SLAVE];
    let mut pit = Pit::DEFAULT;
    let mut seen = Vec::new();
    for l in Records::new(&bytes, Schemas::new(&tables, &mut scratch)) {
        match l.expect("the firmware's stream walks").record {
            Record::Header { version } => seen.push(format!("header v{version}")),
            Record::Configuration(c) => {
                seen.push(format!("config {}", String::from_utf8_lossy(c.machine)))
            }
            Record::Section(s) => {
                seen.push(format!(
                    "{} {} {}",
                    String::from_utf8_lossy(s.idstr),
                    s.instance_id,
                    s.section_id
                ));
                match (s.idstr, s.instance_id) {
                    (b"mc146818rtc", 0) => vmstate::load_record(&mut rtc_state, &s),
                    (b"i8259", i @ (0 | 1)) => vmstate::load_record(&mut pics[i as usize], &s),
                    (b"i8254", 0) => vmstate::load_record(&mut pit, &s),
                    other => panic!("unexpected section {other:?}"),
                }
                .expect("section loads");
            }
            Record::Eof => seen.push("eof".into()),
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "header v3",
            "config pc-i440fx-7.2",
            "mc146818rtc 0 2",
            "i8259 0 3",
            "i8259 1 4",
            "i8254 0 5",
            "eof"
        ]
    );
    assert_eq!(rtc_state, states.rtc);
    assert_eq!(pics, [states.pic0, states.pic1]);
    assert_eq!(pit, states.pit);
    // The RTC's re-inject count travelled in its subsection.
    assert_eq!(rtc_state.irq_reinject_on_ack_count.get(), 2);

    // The v4 stream: checked records (CRC-32C on), each section loaded straight from v4.
    let mut rtc_state = Rtc::new_zeroed();
    let mut pics = [Pic::MASTER, Pic::SLAVE];
    let mut pit = Pit::DEFAULT;
    let mut scratch = [0u8; 1024];
    let mut sections = Vec::new();
    for l in Records4::new(&v4_bytes) {
        match l.expect("the firmware's v4 stream walks").record {
            Record4::Header(h) => assert!(h.crc() && h.vendors.is_empty()),
            Record4::Section(s) => {
                sections.push((String::from_utf8_lossy(s.idstr).into_owned(), s.instance_id));
                match (s.idstr, s.instance_id) {
                    (b"mc146818rtc", 0) => load_v4(&mut rtc_state, &s, &[], &[], &mut scratch),
                    (b"i8259", i @ (0 | 1)) => {
                        load_v4(&mut pics[i as usize], &s, &[], &[], &mut scratch)
                    }
                    (b"i8254", 0) => load_v4(&mut pit, &s, &[], &[], &mut scratch),
                    other => panic!("unexpected section {other:?}"),
                }
                .expect("v4 section loads");
            }
            Record4::Eof => sections.push(("eof".into(), 0)),
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert_eq!(sections.len(), 5, "{sections:?}");
    assert_eq!(rtc_state, states.rtc);
    assert_eq!(pics, [states.pic0, states.pic1]);
    assert_eq!(pit, states.pit);
}
