//! Writes the seed corpora of the fuzz targets, cut from the real QEMU 7.2 streams in
//! `host-tests/fixtures/`: whole streams, device-only streams and their prefixes at record
//! boundaries, each modelled section's body and loaded state, the RAM block list with the first
//! page records, and the configuration records.
//!
//! `cargo run --manifest-path fuzz/harness/Cargo.toml --example make_corpus` (from the
//! repository root); the output goes to `fuzz/corpus/<target>/`, file names say where each
//! input was cut from, and the committed corpus is this program's output plus the crash
//! reproducers under `fuzz/corpus/*/crash-*`.

use std::fs;
use std::path::{Path, PathBuf};
use vmstate::ram::{RamContext, RamOptions, RamRecord};
use vmstate::stream::{FooterScan, Record, Records};
use vmstate::wire::Reader;
use vmstate_fuzz_harness::{DEVICES, device_for};
use zerocopy::IntoBytes;

const FIXTURES: &[(&str, &str)] = &[
    ("nodefaults", "pc-7.2-nodefaults-S.vmstate"),
    ("bios", "pc-7.2-bios.vmstate"),
    ("serial", "pc-7.2-serial.vmstate"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    for (short, file) in FIXTURES {
        let stream = fs::read(root().join("host-tests/fixtures").join(file)).unwrap();
        let records: Vec<_> = Records::new(&stream, FooterScan)
            .collect::<Result<_, _>>()
            .expect("fixture walks");
        if *short == "nodefaults" {
            put("stream", "nodefaults-whole", &stream);
        }

        // Device-only stream: header, configuration, every FULL section but RAM, EOF.
        let mut compact = Vec::new();
        let mut cuts = Vec::new();
        for l in &records {
            let keep = match l.record {
                Record::Header { .. } | Record::Configuration(_) | Record::Eof => true,
                Record::Section(s) => s.kind.has_full_header() && !s.is_ram(),
                _ => false,
            };
            if keep {
                compact.extend_from_slice(&stream[l.offset..l.end]);
                cuts.push(compact.len());
            }
        }
        put("stream", &format!("{short}-devices"), &compact);
        for (i, &cut) in cuts.iter().enumerate().step_by(6) {
            put(
                "stream",
                &format!("{short}-devices-prefix-{i:02}"),
                &compact[..cut],
            );
        }

        for l in &records {
            match l.record {
                Record::Configuration(_) => {
                    put(
                        "configuration",
                        &format!("{short}-record"),
                        &stream[l.offset..l.end],
                    );
                }
                Record::Section(s) if s.kind.has_full_header() && !s.is_ram() => {
                    let Some(d) = device_for(s.idstr, s.instance_id) else {
                        continue;
                    };
                    let index = DEVICES.iter().position(|x| x.name == d.name).unwrap() as u8;
                    let tag = format!("{short}-{}-{}", d.name, s.instance_id);
                    let mut input = vec![index, s.version_id as u8];
                    input.extend_from_slice(s.body);
                    put("device_section", &tag, &input);
                    // The loaded state, for the round trip.
                    let mut state = [0u8; 8192];
                    let n = load_state(d.name, s.version_id, s.body, &mut state);
                    let mut input = vec![index];
                    input.extend_from_slice(&state[..n]);
                    put("round_trip", &tag, &input);
                }
                Record::Section(s) if s.is_ram() && s.kind.has_full_header() => {
                    // Block list, then the first records of the first PART section.
                    let mut input = vec![0u8];
                    input.extend_from_slice(s.body);
                    if let Some(part) = records.iter().find_map(|l| match l.record {
                        Record::Section(p) if p.is_ram() && !p.kind.has_full_header() => Some(p),
                        _ => None,
                    }) {
                        let mut ctx = RamContext::new(RamOptions::default());
                        let mut r = Reader::new(s.body, 0);
                        ctx.measure_body(&mut r).unwrap();
                        let mut r = Reader::new(part.body, 0);
                        for _ in 0..12 {
                            if let RamRecord::Eos = ctx.read_record(&mut r).unwrap() {
                                break;
                            }
                        }
                        input.extend_from_slice(&part.body[..r.position()]);
                        input.extend_from_slice(&0x10u64.to_be_bytes());
                    }
                    put("ram", &format!("{short}-blocks-and-pages"), &input);
                }
                _ => {}
            }
        }
    }
    // A configuration record with all three subsections, in QEMU's order.
    let mut c = b"\x07\x00\x00\x00\x0dpc-i440fx-7.2".to_vec();
    let sub = |c: &mut Vec<u8>, name: &str| {
        c.push(0x05);
        c.push(name.len() as u8);
        c.extend_from_slice(name.as_bytes());
        c.extend_from_slice(&1u32.to_be_bytes());
    };
    sub(&mut c, "configuration/target-page-bits");
    c.extend_from_slice(&12u32.to_be_bytes());
    sub(&mut c, "configuration/capabilities");
    c.extend_from_slice(&1u32.to_be_bytes());
    c.push(15);
    c.extend_from_slice(b"x-ignore-shared");
    sub(&mut c, "configuration/uuid");
    c.extend_from_slice(&[0x42; 16]);
    put("configuration", "all-subsections", &c);

    // v4: every modelled device's default state as a v4 stream, without and with CRC and
    // with a vendor chain, plus prefixes; capabilities records of a destination that knows
    // every device.
    use vmstate::v4::wire::Vendor;
    let chains: [&[Vendor<'_>]; 2] = [
        &[],
        &[Vendor {
            id: vmstate::VendorId::new("org.example.vendor"),
            protocol_minor: 1,
        }],
    ];
    for (name, chain, crc) in [
        ("plain", 0, false),
        ("crc", 0, true),
        ("vendor-crc", 1, true),
    ] {
        let mut buf = vec![0u8; 65536];
        let header = vmstate::v4::wire::Header::new(chains[chain], crc).unwrap();
        let mut sink =
            vmstate::v4::StreamWriter::new(&header, vmstate::SliceSink::new(&mut buf)).unwrap();
        let mut cuts = Vec::new();
        for (i, d) in DEVICES.iter().enumerate() {
            cuts.push(sink.position());
            let id = vmstate::SectionId {
                section_id: i as u32 + 1,
                idstr: d.idstr.as_bytes(),
                instance_id: d.instance.unwrap_or(0),
            };
            sink.section_raw(id, d.vmsd, &(d.state)()).unwrap();
        }
        sink.eof().unwrap();
        let n = sink.into_inner().finish();
        put("v4_stream", &format!("devices-{name}"), &buf[..n]);
        for (i, &cut) in cuts.iter().enumerate().step_by(4) {
            put(
                "v4_stream",
                &format!("devices-{name}-prefix-{i:02}"),
                &buf[..cut],
            );
        }
    }
    q10_command_seeds();
    second_campaign_seeds();
    for vendors in [&[][..], &[vmstate::VendorId::new("org.example.vendor")][..]] {
        let caps = vmstate_fuzz_harness::device_caps(vendors);
        let mut buf = vec![0u8; 8192];
        let bytes = caps.to_postcard(&mut buf).unwrap();
        put(
            "v4_caps",
            &format!("all-devices-{}-vendors", vendors.len()),
            bytes,
        );
    }
}

/// Seeds with a COMMAND record, cut from the real QEMU 10.0 stream `q10-pc-i440fx-10.0`
/// (machine type pc-i440fx-10.0 sends SWITCHOVER_START before the RAM END): header,
/// configuration, RAM START, the command, RAM END, the small device sections and EOF (`stream`); the
/// same without the device sections, as v4 with checksums (`v4_stream`).
fn q10_command_seeds() {
    use vmstate::stream::Options;
    use vmstate::v4::convert::{UpgradeOptions, upgrade};
    let stream = fs::read(root().join("host-tests/fixtures/q10-pc-i440fx-10.0.vmstate")).unwrap();
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    let records: Vec<_> = Records::with_options(&stream, FooterScan, options)
        .collect::<Result<_, _>>()
        .expect("fixture walks");
    let (mut with_devices, mut live_only) = (Vec::new(), Vec::new());
    for l in &records {
        let bytes = &stream[l.offset..l.end];
        match l.record {
            Record::Header { .. } | Record::Configuration(_) | Record::Command(_) | Record::Eof => {
                with_devices.extend_from_slice(bytes);
                live_only.extend_from_slice(bytes);
            }
            Record::Section(s)
                if s.is_ram() && s.kind != vmstate::wire::section::SectionKind::Part =>
            {
                with_devices.extend_from_slice(bytes);
                live_only.extend_from_slice(bytes);
            }
            // Small sections only (e1000 alone is 199 KiB), so the seed stays under libFuzzer's
            // -max_len.
            Record::Section(s) if !s.is_ram() && bytes.len() <= 4096 => {
                with_devices.extend_from_slice(bytes)
            }
            _ => {}
        }
    }
    assert!(with_devices.windows(5).any(|w| w == [8, 0, 0x0b, 0, 0]));
    put("stream", "q10-command-devices", &with_devices);
    put("stream", "q10-command-live", &live_only);
    let mut buf = vec![0u8; live_only.len() * 2 + 64];
    let mut sink = vmstate::SliceSink::new(&mut buf);
    let opts = UpgradeOptions {
        vendors: &[],
        crc: true,
    };
    // No FULL section: nothing to split.
    let split = vmstate::v4::convert::VmsdSplit::new(&[], &mut []);
    upgrade(&live_only, split, &opts, &mut sink).expect("upgrade");
    let n = sink.finish();
    put("v4_stream", "q10-command-crc", &buf[..n]);
}

/// Seeds of the targets added for issue 13 (`description`, `v4_convert`, `dest_check`,
/// `command`), cut from streams of both builds: per fixture, a v3 stream of the header, the
/// configuration, the COMMAND records, the sections of modelled devices and the EOF, with a
/// trailer describing exactly those sections (so it converts); its v4 upgrade; the trailer
/// JSON alone (and the whole trailer of the pc-q35 streams, the smallest); a `vmstate caps`
/// destination of the fixture followed by the small stream; every COMMAND record.
fn second_campaign_seeds() {
    use vmstate::stream::Options;
    use vmstate_cli::dest::Destination;
    use vmstate_cli::v4tools::upgrade_v3;
    for (short, file) in [
        ("q72-pc", "q72-pc-i440fx-7.2.vmstate"),
        ("q72-q35", "q72-pc-q35-7.2.vmstate"),
        ("q10-pc", "q10-pc-i440fx-10.0.vmstate"),
        ("q10-q35", "q10-pc-q35-10.0.vmstate"),
        ("q10-ltim", "q10-pc-i440fx-7.2-ltim.vmstate"),
        ("nodefaults", "pc-7.2-nodefaults-S.vmstate"),
    ] {
        let stream = fs::read(root().join("host-tests/fixtures").join(file)).unwrap();
        let options = Options {
            allow_commands: true,
            ..Options::default()
        };
        let records: Vec<_> = Records::with_options(&stream, FooterScan, options)
            .collect::<Result<_, _>>()
            .expect("fixture walks");
        let mut small = Vec::new();
        let mut kept = Vec::new();
        let mut json = None;
        for l in &records {
            let bytes = &stream[l.offset..l.end];
            match l.record {
                Record::Header { .. } | Record::Configuration(_) | Record::Eof => {
                    small.extend_from_slice(bytes)
                }
                Record::Command(_) => {
                    small.extend_from_slice(bytes);
                    put("command", &format!("{short}-at-{}", l.offset), &bytes[1..]);
                }
                Record::Section(s)
                    if s.kind.has_full_header()
                        && !s.is_ram()
                        && device_for(s.idstr, s.instance_id).is_some() =>
                {
                    small.extend_from_slice(bytes);
                    kept.push((String::from_utf8_lossy(s.idstr).into_owned(), s.instance_id));
                }
                Record::Trailer(t) => json = Some(t.json),
                _ => {}
            }
        }
        let json = json.expect("the fixture has a trailer");
        if short.ends_with("q35") {
            put("description", &format!("{short}-whole"), json);
        }
        let mut desc: serde_json::Value = serde_json::from_slice(json).unwrap();
        desc["devices"].as_array_mut().unwrap().retain(|d| {
            kept.iter().any(|(n, i)| {
                d["name"].as_str() == Some(n) && d["instance_id"].as_u64() == Some(u64::from(*i))
            })
        });
        let text = serde_json::to_vec(&desc).unwrap();
        put("description", &format!("{short}-modelled"), &text);
        small.push(vmstate::wire::record::VMDESCRIPTION);
        small.extend_from_slice(&(text.len() as u32).to_be_bytes());
        small.extend_from_slice(&text);
        put("v4_convert", &format!("{short}-v3"), &small);
        let v4 = upgrade_v3(&small).unwrap_or_else(|e| panic!("{short}: upgrade: {e}"));
        put("v4_convert", &format!("{short}-v4"), &v4);
        let dest = Destination::from_stream(&stream, file).expect("destination of a fixture");
        let caps = serde_json::to_vec(&dest).unwrap();
        let mut input = (caps.len() as u16).to_be_bytes().to_vec();
        input.extend_from_slice(&caps);
        input.extend_from_slice(&small);
        put("dest_check", &format!("{short}-caps-v3"), &input);
        let mut input = (caps.len() as u16).to_be_bytes().to_vec();
        input.extend_from_slice(&caps);
        input.extend_from_slice(&v4);
        put("dest_check", &format!("{short}-caps-v4"), &input);
    }
    // Every command number with payloads around its rule (after the `08` type byte).
    for cmd in 0u16..=12 {
        for len in [0u16, 1, 4, 8, 16] {
            let mut r = cmd.to_be_bytes().to_vec();
            r.extend_from_slice(&len.to_be_bytes());
            r.extend((0..len).map(|i| i as u8));
            put("command", &format!("cmd{cmd:02}-len{len}"), &r);
        }
    }
    // PACKAGED with a 4-byte length and its sub-stream; RECV_BITMAP with a block name.
    let mut packaged = vec![0, 7, 0, 4, 0, 0, 0, 8];
    packaged.extend_from_slice(b"QEVM\0\0\0\x03");
    put("command", "packaged-8", &packaged);
    let mut recv = vec![0, 10, 0, 7, 6];
    recv.extend_from_slice(b"pc.ram");
    put("command", "recv-bitmap-pc-ram", &recv);
}

/// The state bytes a device entry loads from a body (its default state, then the body).
fn load_state(name: &str, version: u32, body: &[u8], out: &mut [u8]) -> usize {
    use vmstate_devices::*;
    use zerocopy::FromZeros;
    macro_rules! go {
        ($init:expr) => {{
            let mut s = $init;
            vmstate::load(&mut s, version, body, 0).expect("fixture section loads");
            let b = s.as_bytes();
            out[..b.len()].copy_from_slice(b);
            b.len()
        }};
    }
    match name {
        "rtc" => go!(rtc::Rtc::new_zeroed()),
        "i8259-master" => go!(i8259::Pic::MASTER),
        "i8259-slave" => go!(i8259::Pic::SLAVE),
        "i8254" => go!(i8254::Pit::DEFAULT),
        "ioapic" => go!(ioapic::Ioapic::DEFAULT),
        "pcspk" => go!(pcspk::Pcspk::DEFAULT),
        "port92" => go!(port92::Port92::DEFAULT),
        "timer" => go!(timer::Timers::DEFAULT),
        "hpet" => go!(hpet::Hpet::new(hpet::HpetConfig::PC_7_2)),
        "serial" => go!(serial::IsaSerial::new()),
        "fw_cfg" => go!(fw_cfg::FwCfg::new(fw_cfg::FwCfgConfig::PC_7_2)),
        "globalstate" => go!(globalstate::GlobalState::new(
            globalstate::RunState::Running
        )),
        other => panic!("no loader for {other}"),
    }
}
