//! v3 → v4 → v3 on real QEMU 7.2 streams, and corruption detection (docs/FORMAT.md §8, §5).

mod v4_support;

use v4_support::{FIXTURES, FIXTURES_V2, WITH_COMMAND, fixture, to_v3, to_v4};
use vmstate::v4::Error;
use vmstate::v4::wire::{Body, Record4, Records4};
use vmstate::wire::command::CommandId;
use vmstate::wire::section::SectionKind;

#[test]
fn v3_v4_v3_is_byte_identical_on_every_fixture() {
    for name in FIXTURES {
        let v3 = fixture(name);
        for crc in [true, false] {
            let v4 = to_v4(&v3, crc);
            assert_eq!(&v4[4..8], &[0, 0, 0, 4], "{name}");
            let back = to_v3(&v4).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(back == v3, "{name} (crc {crc}): round trip differs");
        }
    }
}

/// The second-generation streams of both builds, among them the QEMU 10.0 streams whose
/// SWITCHOVER_START record v4 carries (docs/FORMAT.md §12).
#[test]
fn v3_v4_v3_is_byte_identical_on_the_streams_of_both_builds() {
    for name in FIXTURES_V2 {
        let v3 = fixture(name);
        for crc in [true, false] {
            let v4 = to_v4(&v3, crc);
            let back = to_v3(&v4).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(back == v3, "{name} (crc {crc}): round trip differs");
            let commands: Vec<_> = Records4::new(&v4)
                .filter_map(|r| match r.unwrap().record {
                    Record4::Command(c) => Some(c.id),
                    _ => None,
                })
                .collect();
            let want: &[CommandId] = if WITH_COMMAND.contains(&name) {
                &[CommandId::SwitchoverStart]
            } else {
                &[]
            };
            assert_eq!(commands, want, "{name}");
        }
    }
}

/// The v4 COMMAND record is CRC-protected like every other framed record: flipping any bit of
/// it (type, length, command, CRC) makes the walk fail at or before that record.
#[test]
fn every_bit_flip_in_a_command_record_is_detected() {
    let v4 = to_v4(&fixture("q10-pc-i440fx-10.0.vmstate"), true);
    let (at, end) = Records4::new(&v4)
        .map(|r| r.unwrap())
        .find(|r| matches!(r.record, Record4::Command(_)))
        .map(|r| (r.offset, r.end))
        .unwrap();
    assert_eq!(end - at, 1 + 4 + 4 + 4, "type, length, 00 0b 00 00, CRC");
    for byte in at..end {
        for bit in 0..8 {
            let mut bad = v4.clone();
            bad[byte] ^= 1 << bit;
            let failed = Records4::new(&bad).any(|r| match r {
                Err(_) => true,
                Ok(r) => {
                    matches!(r.record, Record4::Command(c) if c.id != CommandId::SwitchoverStart)
                }
            });
            assert!(failed, "flip of bit {bit} at {byte} went unnoticed");
        }
    }
}

#[test]
fn fixture_sections_are_framed_with_their_subsections() {
    let v4 = to_v4(&fixture("pc-7.2-bios.vmstate"), true);
    let mut full = 0;
    let mut subs = Vec::new();
    for rec in Records4::new(&v4) {
        if let Record4::Section(s) = rec.unwrap().record {
            assert!(
                s.minors.is_empty(),
                "an upstream stream declares no vendor level"
            );
            if s.kind == SectionKind::Full {
                full += 1;
                assert!(matches!(s.body, Body::Structured { .. }));
                for sub in s.subsections() {
                    let sub = sub.unwrap();
                    assert!(sub.must_understand() && sub.vendor.is_none());
                    subs.push(String::from_utf8(sub.name.to_vec()).unwrap());
                }
            }
        }
    }
    assert_eq!(full, 30);
    // Every top-level subsection the trailer lists, in stream order (host-tests README).
    assert_eq!(
        subs,
        [
            "cpu/poll_control_msr",
            "cpu/msr_smi_count",
            "fw_cfg/dma",
            "fw_cfg/acpi_mr",
            "piix4_pm/memhp"
        ]
    );
}

fn walk(stream: &[u8]) -> Result<usize, Error> {
    let mut n = 0;
    for r in Records4::new(stream) {
        r?;
        n += 1;
    }
    Ok(n)
}

#[test]
fn every_single_bit_flip_in_a_section_record_is_detected() {
    let v4 = to_v4(&fixture("pc-7.2-nodefaults-S.vmstate"), true);
    let mut header_len = 0;
    let mut records = Vec::new();
    for rec in Records4::new(&v4) {
        let rec = rec.unwrap();
        match &rec.record {
            Record4::Header(_) => header_len = rec.end,
            Record4::Section(s) => records.push((rec.offset, rec.end, s.kind)),
            _ => {}
        }
    }
    let mut flips = 0;
    let mut skipped = 0;
    for &(start, end, kind) in &records {
        // The RAM PART record holds the guest's pages (hundreds of KiB): flipping each of its
        // bits and re-checksumming is quadratic, so it is left out; every other record (all
        // device sections, RAM START and END) is flipped bit by bit.
        if kind == SectionKind::Part {
            skipped += 1;
            continue;
        }
        // START/PART/END need their START in the mini stream; RAM END refers to RAM START.
        let mut base = Vec::new();
        if kind == SectionKind::End {
            let (s0, e0, _) = records[0];
            base = v4[s0..e0].to_vec();
        }
        let mut s = v4[..header_len].to_vec();
        s.extend_from_slice(&base);
        let rec_at = s.len();
        s.extend_from_slice(&v4[start..end]);
        s.push(0);
        assert!(walk(&s).is_ok());
        for byte in rec_at..rec_at + (end - start) {
            for bit in 0..8 {
                s[byte] ^= 1 << bit;
                assert!(
                    walk(&s).is_err(),
                    "flip of bit {bit} at record byte {} of record at {start} not detected",
                    byte - rec_at
                );
                s[byte] ^= 1 << bit;
                flips += 1;
            }
        }
    }
    assert_eq!(skipped, 1);
    assert!(flips > 8 * 10_000, "{flips}");
}

#[test]
fn a_checksum_error_names_the_section_and_offsets() {
    let mut v4 = to_v4(&fixture("pc-7.2-serial.vmstate"), true);
    let (at, len) = Records4::new(&v4)
        .map(|r| r.unwrap())
        .find_map(|r| match r.record {
            Record4::Section(s) if s.idstr == b"serial" => Some((r.offset, r.end - r.offset)),
            _ => None,
        })
        .unwrap();
    v4[at + len / 2] ^= 0x10;
    let err = Records4::new(&v4).find_map(|r| r.err()).unwrap();
    match err {
        Error::Checksum {
            offset, section, ..
        } => {
            assert_eq!(offset, at);
            assert!(section.idstr.eq_bytes(b"serial"));
            assert_eq!(section.section_id, 22);
        }
        e => panic!("{e}"),
    }
    // Downgrade refuses to produce anything from a corrupt stream.
    assert!(to_v3(&v4).is_err());
}

#[test]
fn every_prefix_of_a_v4_stream_fails_cleanly() {
    let v4 = to_v4(&fixture("pc-7.2-nodefaults-S.vmstate"), true);
    // Cut inside and at the edges of the header, the configuration and the first sections.
    let ends: Vec<usize> = Records4::new(&v4).map(|r| r.unwrap().end).take(6).collect();
    for n in 0..*ends.last().unwrap() {
        let cut = &v4[..n];
        let res: Result<Vec<_>, _> = Records4::new(cut).collect();
        match res {
            Err(Error::Codec(e)) => assert!(e.is_incomplete(), "prefix {n}: {e}"),
            Err(e) => panic!("prefix {n}: {e}"),
            Ok(_) => panic!("prefix {n} accepted"),
        }
    }
}
