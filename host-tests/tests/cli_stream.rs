//! The CLI library on the real QEMU 7.2 fixtures: whole-stream decode and byte-identical
//! rewrite, analyze-migration.py compatible JSON, field edits, and refusal of streams that
//! disagree with their own description.

use serde_json::Value;
use std::path::PathBuf;
use vmstate_cli::generic::{EditCheck, NoCheck, decode_section};
use vmstate_cli::inspect::ram_summary;
use vmstate_cli::model::{Item, StreamError};
use vmstate_cli::{Stream, pretty_json};

const FIXTURES: &[&str] = &["pc-7.2-nodefaults-S", "pc-7.2-bios", "pc-7.2-serial"];

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn recorded(name: &str) -> (String, Value) {
    let text = String::from_utf8(read(name)).unwrap();
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

#[test]
fn rewrite_without_edits_is_byte_identical() {
    for f in FIXTURES {
        let bytes = read(&format!("{f}.vmstate"));
        let s = Stream::parse(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        let out = s.to_bytes().unwrap();
        assert_eq!(out.len(), bytes.len(), "{f}");
        assert!(out == bytes, "{f}: rewrite differs");
        // Every record is accounted for: entries tile the input from the configuration to EOF.
        let first = s.entries.first().unwrap().offset;
        assert_eq!(
            first,
            8 + 5 + 13,
            "{f}: records start after header + configuration"
        );
        for w in s.entries.windows(2) {
            assert_eq!(w[0].end, w[1].offset, "{f}");
        }
        let eof = s.entries.last().unwrap();
        assert_eq!(eof.item, Item::Eof);
        assert_eq!(eof.end + 5 + s.trailer.unwrap().len(), bytes.len(), "{f}");
    }
}

#[test]
fn state_json_equals_analyze_migration_output() {
    for f in FIXTURES {
        let bytes = read(&format!("{f}.vmstate"));
        let s = Stream::parse(&bytes).unwrap();
        let mine = s.analyze_state().unwrap();
        let (text, theirs) = recorded(&format!("{f}.state.json"));
        assert_eq!(mine, theirs, "{f}");
        // Key order and formatting too: the script prints `json.dumps(indent=4)` + newline.
        assert_eq!(pretty_json(&mine) + "\n", text, "{f}");
    }
}

#[test]
fn desc_json_equals_analyze_migration_output() {
    for f in FIXTURES {
        let bytes = read(&format!("{f}.vmstate"));
        let s = Stream::parse(&bytes).unwrap();
        let d = s.description.as_ref().unwrap();
        let (text, theirs) = recorded(&format!("{f}.desc.json"));
        assert_eq!(d.to_json(), theirs, "{f}");
        assert_eq!(pretty_json(&d.to_json()) + "\n", text, "{f}");
        assert_eq!(d.page_size, 4096);
    }
}

#[test]
fn ram_summary_matches_the_fixture_readme() {
    // Counts from host-tests/fixtures/README.md.
    for (f, zero, normal, pc_ram_pages) in [
        ("pc-7.2-nodefaults-S", 8273, 49, 0),
        ("pc-7.2-bios", 8211, 111, 61),
        ("pc-7.2-serial", 8273, 49, 0),
    ] {
        let bytes = read(&format!("{f}.vmstate"));
        let s = Stream::parse(&bytes).unwrap();
        let ram = ram_summary(&s);
        let names: Vec<&str> = ram.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "pc.ram",
                "/rom@etc/acpi/tables",
                "pc.bios",
                "pc.rom",
                "/rom@etc/table-loader",
                "/rom@etc/acpi/rsdp"
            ],
            "{f}"
        );
        assert_eq!(ram.iter().map(|(_, p)| p.zero).sum::<u64>(), zero, "{f}");
        assert_eq!(
            ram.iter().map(|(_, p)| p.normal).sum::<u64>(),
            normal,
            "{f}"
        );
        assert_eq!(ram[0].1.normal, pc_ram_pages, "{f}");
        assert_eq!(ram[0].1.length, 32 << 20, "{f}");
        assert_eq!(ram[2].1.normal, 46, "{f}: pc.bios pages");
    }
}

#[test]
fn serial_section_is_decoded_generically() {
    let bytes = read("pc-7.2-serial.vmstate");
    let s = Stream::parse(&bytes).unwrap();
    let (sec, body) = s.devices().find(|(m, _)| m.idstr == b"serial").unwrap();
    assert_eq!((sec.section_id, sec.version_id, sec.body_len), (22, 3, 11));
    assert!(body.subsections.is_empty());
    assert_eq!(body.to_bytes().len(), 11);
    // Subsections named in the README are found where the description says.
    let subs: Vec<(String, Vec<String>)> = s
        .devices()
        .filter(|(_, b)| !b.subsections.is_empty())
        .map(|(m, b)| {
            (
                m.name(),
                b.subsections.iter().map(|x| x.name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            ("cpu".to_string(), vec!["cpu/poll_control_msr".to_string()]),
            (
                "fw_cfg".to_string(),
                vec!["fw_cfg/dma".to_string(), "fw_cfg/acpi_mr".to_string()]
            ),
            (
                "0000:00:01.3/piix4_pm".to_string(),
                vec!["piix4_pm/memhp".to_string()]
            ),
        ]
    );
}

/// Applies the brief's example edits and checks that exactly those values change, both in
/// the bytes and in the analyze-migration.py view.
#[test]
fn example_edits_change_exactly_their_fields() {
    for f in FIXTURES {
        let bytes = read(&format!("{f}.vmstate"));
        let mut s = Stream::parse(&bytes).unwrap();
        for a in [
            "i8259[0].imr=0x5a",
            "i8254[0].channels[1].count=100",
            "mc146818rtc[0].cmos_data[14]=0x42",
            "cpu[0].env.regs[0]=0x12345678",
        ] {
            s.set(a, &NoCheck).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        let out = s.to_bytes().unwrap();
        assert_eq!(out.len(), bytes.len());
        let edited = Stream::parse(&out).unwrap();
        let got = edited.analyze_state().unwrap();

        let (_, mut want) = recorded(&format!("{f}.state.json"));
        let key = |name: &str| {
            want.as_object()
                .unwrap()
                .keys()
                .find(|k| k.starts_with(&format!("{name} (")))
                .unwrap()
                .clone()
        };
        let (i8259, i8254, rtc, cpu) = (key("i8259"), key("i8254"), key("mc146818rtc"), key("cpu"));
        want[&i8259]["imr"] = "0x5a".into();
        want[&i8254]["channels"][1]["count"] = "0x00000064".into();
        let cmos = want[&rtc]["cmos_data"].as_str().unwrap().to_string();
        want[&rtc]["cmos_data"] = format!("{}42{}", &cmos[..14 * 3], &cmos[14 * 3 + 2..]).into();
        want[&cpu]["env.regs"][0] = "0x0000000012345678".into();
        assert_eq!(got, want, "{f}");

        // Only the bytes of those four fields differ (at most 1 + 4 + 1 + 8 bytes).
        let changed = bytes.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert!((1..=14).contains(&changed), "{f}: {changed} bytes changed");
        // The first i8259 (instance 0) changed, the second did not.
        let imr = |s: &Stream<'_>, inst: u32| {
            s.analyze_state().unwrap()[&key_of(s, "i8259", inst)]["imr"].clone()
        };
        assert_eq!(imr(&edited, 0), "0x5a");
        let orig = Stream::parse(&bytes).unwrap();
        assert_eq!(imr(&edited, 1), imr(&orig, 1));
    }
}

fn key_of(s: &Stream<'_>, idstr: &str, instance: u32) -> String {
    let (m, _) = s
        .devices()
        .find(|(m, _)| m.idstr == idstr.as_bytes() && m.instance_id == instance)
        .unwrap();
    format!("{idstr} ({})", m.section_id)
}

#[test]
fn edits_out_of_range_or_unknown_are_refused_and_change_nothing() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    let mut s = Stream::parse(&bytes).unwrap();
    for (a, msg) in [
        ("i8259[0].imr=0x100", "out of range"),
        ("i8259[0].imr=-1", "out of range"),
        ("i8259[2].imr=1", "no section 'i8259' instance 2"),
        ("i8259[0].nosuch=1", "no field matches"),
        ("i8254[0].channels[3].count=1", "index 3 out of range"),
        ("mc146818rtc[0].cmos_data[128]=1", "out of range"),
        ("mc146818rtc[0].cmos_data[1]=256", "does not fit"),
        ("cpu[0].env.regs=1", "not a scalar"),
        ("i8259.imr=1", "expected IDSTR[INSTANCE].FIELD"),
        ("i8259[0].imr", "expected PATH=VALUE"),
        ("i8259[0].imr=ten", "not a number"),
    ] {
        let e = s.set(a, &NoCheck).unwrap_err();
        assert!(e.0.contains(msg), "{a}: {e}");
    }
    assert!(s.to_bytes().unwrap() == bytes);
}

/// A stand-in for a typed device's check: refuses an RTC index register above 127.
struct RtcIndexBelow128;

impl EditCheck for RtcIndexBelow128 {
    fn check(&self, idstr: &str, _: u32, _: u32, body: &[u8]) -> Result<(), String> {
        // cmos_data (128 bytes) is followed by cmos_index (1 byte) in the rtc body.
        match (idstr, body.get(128)) {
            ("mc146818rtc", Some(&i)) if i >= 128 => Err(format!("cmos_index {i} >= 128")),
            _ => Ok(()),
        }
    }
}

#[test]
fn edit_check_hook_can_veto_an_edit() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    let mut s = Stream::parse(&bytes).unwrap();
    s.set("mc146818rtc[0].cmos_index=5", &RtcIndexBelow128)
        .unwrap();
    let e = s
        .set("mc146818rtc[0].cmos_index=200", &RtcIndexBelow128)
        .unwrap_err();
    assert!(e.0.contains("cmos_index 200 >= 128"), "{e}");
    let v = s.analyze_state().unwrap();
    assert_eq!(v[&key_of(&s, "mc146818rtc", 0)]["cmos_index"], "0x05");
}

/// Replaces `from` by `to` (same length) in the trailer JSON, so the trailer stays valid.
fn patch_trailer(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = vmstate::wire::Trailer::locate(bytes).unwrap() + 5;
    let json = &bytes[at..];
    let i = json
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in trailer"));
    let mut out = bytes.to_vec();
    out[at + i..at + i + to.len()].copy_from_slice(to.as_bytes());
    out
}

#[test]
fn streams_that_disagree_with_their_description_are_refused() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    type Case = (&'static str, &'static str, fn(&StreamError) -> bool);
    let cases: [Case; 4] = [
        // The cpu section is version 12; a description saying 13 does not describe it.
        (
            r#""name": "cpu", "instance_id": 0, "vmsd_name": "cpu", "version": 12"#,
            r#""name": "cpu", "instance_id": 0, "vmsd_name": "cpu", "version": 13"#,
            |e| matches!(e, StreamError::Mismatch { message, .. } if message.contains("'cpu' instance 0")),
        ),
        // Another idstr in the entry: the `pcspk` section has no entry (sections find their
        // entry by idstr and instance id, not by position).
        (
            r#""name": "pcspk""#,
            r#""name": "pcspq""#,
            |e| matches!(e, StreamError::Mismatch { message, .. } if message.contains("'pcspk' instance 0 (id 21) is not in the stream's description")),
        ),
        // A field size that does not match the type's width.
        (
            r#"{"name": "imr", "type": "uint8", "size": 1}"#,
            r#"{"name": "imr", "type": "uint8", "size": 2}"#,
            |e| matches!(e, StreamError::Body { error, .. } if error.path == "imr"),
        ),
        // A subsection name that is not what the stream carries.
        (
            r#""vmsd_name": "fw_cfg/dma""#,
            r#""vmsd_name": "fw_cfg/dmb""#,
            |e| matches!(e, StreamError::Body { error, .. } if error.message.contains("expected subsection fw_cfg/dmb, found fw_cfg/dma")),
        ),
    ];
    for (from, to, ok) in cases {
        let bad = patch_trailer(&bytes, from, to);
        let e = Stream::parse(&bad).unwrap_err();
        assert!(ok(&e), "{to}: {e}");
    }
    // A body byte that breaks a subsection marker: fw_cfg/dma's 0x05 becomes 0x06.
    let at = bytes
        .windows(12)
        .position(|w| w == b"\x05\x0afw_cfg/dma")
        .unwrap();
    let mut bad = bytes.clone();
    bad[at] = 0x06;
    let e = Stream::parse(&bad).unwrap_err();
    assert!(
        e.to_string().contains("expected subsection fw_cfg/dma"),
        "{e}"
    );
    assert!(e.to_string().contains(&format!("at byte {at}")), "{e}");
}

#[test]
fn every_device_body_prefix_is_refused() {
    let bytes = read("pc-7.2-bios.vmstate");
    let s = Stream::parse(&bytes).unwrap();
    let desc = s.description.as_ref().unwrap();
    let mut n = 0;
    for e in &s.entries {
        let Item::Device {
            section, device, ..
        } = &e.item
        else {
            continue;
        };
        let body = &bytes[section.body_offset..section.body_offset + section.body_len];
        let d = &desc.devices[*device].body;
        assert!(decode_section(d, body, section.body_offset).is_ok());
        for k in 0..body.len() {
            let err = decode_section(d, &body[..k], section.body_offset).unwrap_err();
            assert!(
                err.offset <= section.body_offset + k,
                "{}: prefix {k}: {err}",
                section.name()
            );
            n += 1;
        }
    }
    assert!(n > 9000, "{n}");
}

/// Flips every byte of the device-section region: the parse fails cleanly, or it succeeds
/// and the rewrite reproduces the flipped input exactly.
#[test]
fn flipped_device_bytes_fail_cleanly_or_round_trip() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    let s = Stream::parse(&bytes).unwrap();
    let start = s
        .entries
        .iter()
        .find(|e| matches!(e.item, Item::Device { .. }))
        .unwrap()
        .offset;
    let end = s.entries.last().unwrap().end;
    let (mut ok, mut refused) = (0, 0);
    let mut buf = bytes.clone();
    // The trailer is not flipped: parse its JSON once.
    let desc = s.description.clone();
    for i in (start..end).step_by(3) {
        buf[i] ^= 0xff;
        match Stream::parse_with(&buf, desc.clone()) {
            Ok(t) => {
                assert!(t.to_bytes().unwrap() == buf, "flip at {i}");
                ok += 1;
            }
            Err(_) => refused += 1,
        }
        buf[i] ^= 0xff;
    }
    // Value bytes round-trip; header, marker and name bytes are refused.
    assert!(ok > 2000 && refused > 200, "ok {ok}, refused {refused}");
}

#[test]
fn truncated_streams_are_refused() {
    let bytes = read("pc-7.2-serial.vmstate");
    let s = Stream::parse(&bytes).unwrap();
    // Cut inside each record and at record boundaries (the EOF and trailer are then missing).
    let eof_end = s.entries.last().unwrap().end;
    for e in &s.entries {
        for cut in [e.offset, e.offset + 1, (e.offset + e.end) / 2, e.end - 1] {
            if cut != eof_end {
                assert!(Stream::parse(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
    // Cut just after EOF: a stream without a trailer (QEMU's suppress-vmdesc) is whole. Its
    // bodies cannot be decoded without a description, but it still writes back exactly.
    let bare = Stream::parse(&bytes[..eof_end]).unwrap();
    assert!(bare.description.is_none() && bare.analyze_state().is_none());
    assert_eq!(bare.entries.len(), s.entries.len());
    assert!(bare.to_bytes().unwrap() == bytes[..eof_end]);
    for cut in [0, 4, 8, 12, bytes.len() - 1] {
        assert!(Stream::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn diff_reports_field_and_page_differences() {
    let a = read("pc-7.2-nodefaults-S.vmstate");
    let b = read("pc-7.2-serial.vmstate");
    let c = read("pc-7.2-bios.vmstate");
    let (sa, sb, sc) = (
        Stream::parse(&a).unwrap(),
        Stream::parse(&b).unwrap(),
        Stream::parse(&c).unwrap(),
    );
    assert!(vmstate_cli::diff::diff(&sa, &sa).is_empty());
    let d = vmstate_cli::diff::diff(&sa, &sb);
    let find = |d: &[vmstate_cli::diff::Difference], p: &str| {
        d.iter()
            .find(|x| x.path == p)
            .map(|x| (x.a.clone(), x.b.clone()))
    };
    assert_eq!(find(&d, "serial[0]"), Some(("-".into(), "present".into())));
    // The two -S streams differ in the RTC (wall clock), the serial port, one PIIX4 PM config
    // byte, and the firmware's ACPI ROMs (whose tables describe the serial port); neither
    // guest RAM nor the BIOS image differs.
    assert!(
        d.iter().all(|x| x.path.starts_with("mc146818rtc[0].")
            || x.path == "serial[0]"
            || x.path.starts_with("0000:00:01.3/piix4_pm[0].")
            || x.path.starts_with("ram:/rom@etc/")),
        "{d:#?}"
    );
    // Cross-check one page difference against the raw bytes: the RSDP page starts with its
    // signature, and the tables' address at +0x10 moved with the larger DSDT.
    let rsdp_byte = |bytes: &[u8]| {
        let at = bytes.windows(8).position(|w| w == b"RSD PTR ").unwrap();
        format!("{:#04x}", bytes[at + 0x10])
    };
    let (ra, rb) = find(&d, "ram:/rom@etc/acpi/rsdp@0x0+0x10").unwrap();
    assert_eq!(ra, rsdp_byte(&a));
    assert!(rb.starts_with(&format!("{} (", rsdp_byte(&b))), "{rb}");
    // SeaBIOS ran in the bios stream: the timer moved and RAM pages were written.
    let d = vmstate_cli::diff::diff(&sa, &sc);
    assert_eq!(
        find(&d, "timer[0].cpu_ticks_offset"),
        Some(("0x0".into(), "0xa61e0311".into()))
    );
    let pc_ram = d
        .iter()
        .filter(|x| x.path.starts_with("ram:pc.ram@"))
        .count();
    assert_eq!(pc_ram, 61, "pages of pc.ram sent only in the bios stream");
}

/// `DescDecoder` on its own drives the codec's record walk over every fixture: each FULL body
/// ends exactly where its decode says, checked by the footer that follows.
#[test]
fn desc_decoder_walks_every_fixture_with_the_codec_walk() {
    use vmstate::stream::{FooterScan, Next, Record, Records};
    use vmstate_cli::model::{DescDecoder, find_description};
    for f in FIXTURES {
        let bytes = read(&format!("{f}.vmstate"));
        let (_, desc) = find_description(&bytes).unwrap().unwrap();
        let mut decoder = DescDecoder::new(&desc);
        let mut records = Records::new(&bytes, FooterScan);
        let mut full = Vec::new();
        while let Some(next) = records.next_head() {
            let Next::Section(head) = next.unwrap() else {
                continue;
            };
            let len = if head.kind == vmstate::wire::SectionKind::Full {
                decoder.decode(&head, records.body_rest(&head)).unwrap().2
            } else {
                records.measure(&head).unwrap()
            };
            if let Record::Section(s) = records.commit(&head, len).unwrap().record
                && s.kind == vmstate::wire::SectionKind::Full
            {
                full.push((String::from_utf8_lossy(s.idstr).into_owned(), s.body.len()));
            }
        }
        assert_eq!(decoder.matched(), desc.devices.len(), "{f}");
        let names: Vec<&str> = desc.devices.iter().map(|d| d.name.as_str()).collect();
        let seen: Vec<&str> = full.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(seen, names, "{f}");
        // Body sizes agree with the description's own field sizes for sections without
        // subsections (sum of size x array_len).
        for (d, (_, len)) in desc.devices.iter().zip(&full) {
            if d.body.subsections.is_none() {
                let sum: u64 = d
                    .body
                    .fields
                    .iter()
                    .map(|f| match f.repeat {
                        vmstate_cli::desc::Repeat::ArrayLen(n) => n * f.size,
                        _ => f.size,
                    })
                    .sum();
                assert_eq!(sum, *len as u64, "{f} {}", d.name);
            }
        }
    }
}

/// Flips bits all over the trailer JSON (one at a time): the stream is refused cleanly, or,
/// when the flip still describes the same bytes (a changed field name, say), it decodes and
/// writes back exactly.
#[test]
fn flipped_trailer_bytes_fail_cleanly_or_round_trip() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    let at = vmstate::wire::Trailer::locate(&bytes).unwrap() + 5;
    let (mut ok, mut refused) = (0, 0);
    let mut buf = bytes.clone();
    for i in (at..bytes.len()).step_by(151) {
        buf[i] ^= 0x01;
        match Stream::parse(&buf) {
            Ok(s) => {
                assert!(s.to_bytes().unwrap() == buf, "flip at {i}");
                ok += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
        buf[i] ^= 0x01;
    }
    assert!(ok > 50 && refused > 200, "ok {ok}, refused {refused}");
}

/// QEMU's loader peeks for subsections after every nested struct (docs/V3-WIRE.md §7.2): an edit
/// that makes the next field's bytes spell `05 len "PCIDevice…"` after `ide.parent_obj` would be
/// read as a subsection of `PCIDevice` by QEMU, so it is refused.
#[test]
fn edits_that_forge_a_subsection_header_are_refused() {
    let bytes = read("pc-7.2-nodefaults-S.vmstate");
    let mut s = Stream::parse(&bytes).unwrap();
    let ide = "0000:00:01.1/ide[0].bmdma[0]";
    for a in [
        format!("{ide}.cmd=5"),
        format!("{ide}.migration_compat_status=10"),
        format!("{ide}.addr=0x50434944"),
    ] {
        s.set(&a, &NoCheck).unwrap_or_else(|e| panic!("{a}: {e}"));
    }
    let e = s
        .set(
            &format!("{ide}.migration_retry_sector_num=0x65766963652f0000"),
            &NoCheck,
        )
        .unwrap_err();
    assert!(e.0.contains("read as subsection PCIDevice/"), "{e}");
    // The three accepted edits are in place and the stream still decodes.
    let out = s.to_bytes().unwrap();
    let back = Stream::parse(&out).unwrap();
    let v = back.analyze_state().unwrap();
    let bm = &v[&key_of(&back, "0000:00:01.1/ide", 0)]["bmdma"][0];
    assert_eq!(bm["cmd"], "0x05");
    assert_eq!(bm["addr"], "0x50434944");
}

/// Every fixture of both builds that has analyze-migration.py outputs stored: the `-d state`
/// text (`analyze::write_state`) and the `-d desc` text equal the script's of the QEMU build
/// that wrote it (7.2's for `pc-7.2-*` and `q72-*`, 10.0's for `q10-*`) byte for byte, and the
/// stream writes back unchanged.
#[test]
fn both_builds_streams_print_as_their_own_analyze_migration() {
    use vmstate_host_tests::{FIXTURES_V2, fixture};
    let mut compared = 0;
    for f in vmstate_host_tests::FIXTURES.iter().chain(FIXTURES_V2) {
        let bytes = fixture(f);
        let s = Stream::parse(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(s.to_bytes().unwrap() == bytes, "{f}: rewrite differs");
        let stem = f.trim_end_matches(".vmstate");
        let Ok(state) = std::fs::read_to_string(path(&format!("{stem}.state.json"))) else {
            // Both QEMU scripts fail on this one ("Unknown section type: 5").
            assert_eq!(stem, "q72-pc-i440fx-7.2-ignore-shared");
            continue;
        };
        let mut text = Vec::new();
        assert!(vmstate_cli::analyze::write_state(&s, &mut text));
        assert!(text == state.as_bytes(), "{f}: -d state text differs");
        let (desc, _) = recorded(&format!("{stem}.desc.json"));
        let d = s.description.as_ref().unwrap();
        assert_eq!(pretty_json(&d.to_json()) + "\n", desc, "{f}: -d desc text");
        // QEMU >= 8.2 describes its configuration record first.
        assert_eq!(d.configuration.is_some(), stem.starts_with("q10-"), "{f}");
        compared += 1;
    }
    assert_eq!(compared, 11);
}

/// The trailer's `configuration` object (QEMU >= 8.2) describes the CONFIGURATION record, and
/// the record must read as described, as QEMU 10.0's analyze-migration.py reads it: a
/// capability of another size, or a machine name of another length, is refused.
#[test]
fn the_configuration_record_must_read_as_described() {
    let bytes = read("q10-pc-i440fx-10.0-ignore-shared.vmstate");
    let s = Stream::parse(&bytes).unwrap();
    let caps = s.configuration.unwrap().capabilities.unwrap();
    assert_eq!(caps.iter().collect::<Vec<_>>(), [b"x-ignore-shared"]);
    for (from, to) in [
        (
            r#"{"name": "capabilities", "type": "capability", "size": 16}"#,
            r#"{"name": "capabilities", "type": "capability", "size": 17}"#,
        ),
        (
            r#"{"name": "name", "type": "buffer", "size": 14}"#,
            r#"{"name": "name", "type": "buffer", "size": 15}"#,
        ),
    ] {
        let e = Stream::parse(&patch_trailer(&bytes, from, to)).unwrap_err();
        assert!(
            matches!(&e, StreamError::Body { section, .. } if section == "configuration"),
            "{to}: {e}"
        );
    }
}

/// Sections find their description entry by idstr and instance id; a real trailer edited to
/// describe `i8259` instance 0 twice is refused when read, naming both entries.
#[test]
fn a_trailer_describing_a_section_twice_is_refused() {
    let bytes = read("q10-pc-i440fx-7.2.vmstate");
    let bad = patch_trailer(
        &bytes,
        r#""name": "i8259", "instance_id": 1"#,
        r#""name": "i8259", "instance_id": 0"#,
    );
    let Err(StreamError::Description(e)) = Stream::parse(&bad) else {
        panic!("accepted a duplicate entry");
    };
    assert!(
        e.message.contains("'i8259' instance 0 is described twice"),
        "{e}"
    );
    let (_, d) = vmstate_cli::model::find_description(&bytes)
        .unwrap()
        .unwrap();
    let (i, dev) = d.device(b"i8259", 1).unwrap();
    assert_eq!((dev.name.as_str(), dev.instance_id), ("i8259", 1));
    assert_eq!(e.path, format!("devices[{i}]"));
}
