//! `vmstate::load_section`: the bytes of one encoded section (header, body, footer) loaded in
//! one call, for every device model of this crate, on the sections real QEMU 10.0 wrote
//! (`host-tests/fixtures/q10-*-10.0.vmstate`, with two ISA serial ports): each section's own
//! bytes load into a fresh typed state equal to what the whole-stream walk loaded, re-encode to
//! the same bytes, and every malformed variant (cut, another id / idstr / instance / version,
//! a bad footer, bytes after it) is refused with the offset, section and field, leaving the
//! state as it was.

use std::fmt::Debug;
use vmstate::stream::{FooterScan, Options, Record, Records, SectionRecord};
use vmstate::{ErrorKind, SectionId, State};
use vmstate_devices::machine::{Destination, QemuBuild};
use vmstate_devices::pc::{Pc, Slot};

const FIXTURES: [(&str, &[u8]); 2] = [
    (
        "q10-pc-i440fx-10.0",
        include_bytes!("../../host-tests/fixtures/q10-pc-i440fx-10.0.vmstate"),
    ),
    (
        "q10-pc-q35-10.0",
        include_bytes!("../../host-tests/fixtures/q10-pc-q35-10.0.vmstate"),
    ),
];

/// The fixture's machine type on QEMU 10.0, with the two serial ports it was started with.
fn pc_for(name: &str) -> Pc {
    let machine = name.strip_prefix("q10-").unwrap();
    let dest = Destination::parse(machine.as_bytes(), Some(QemuBuild::V10_0)).unwrap();
    let mut config = dest.config();
    config.serial_ports = 2;
    Pc::new(config)
}

/// The FULL section records of a stream.
fn sections(stream: &[u8]) -> Vec<SectionRecord<'_>> {
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    Records::with_options(stream, FooterScan, options)
        .filter_map(|r| match r.expect("fixture walks").record {
            Record::Section(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn id_of<'a>(s: &SectionRecord<'a>) -> SectionId<'a> {
    SectionId {
        section_id: s.section_id,
        idstr: s.idstr,
        instance_id: s.instance_id,
    }
}

/// One device's section: the one-call load of its real bytes, the round trip, and every
/// malformed variant. `loaded` is the state the whole-stream walk loaded, `fresh` its
/// destination's power-on state. Returns the number of malformed inputs checked.
fn check<T: State + Clone + PartialEq + Debug>(
    loaded: &T,
    fresh: &T,
    rec: &SectionRecord<'_>,
    bytes: &[u8],
) -> usize {
    let id = id_of(rec);
    let name = String::from_utf8_lossy(rec.idstr).into_owned();

    // The real bytes load in one call into the state the stream walk loaded.
    let mut state = fresh.clone();
    vmstate::load_section(&mut state, id, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        &state, loaded,
        "{name}: one-call load differs from the stream walk"
    );

    // Encode → one-call load → equal state, and the encoding is QEMU's bytes.
    let mut buf = vec![0u8; bytes.len() + 64];
    let n = vmstate::encode_section_into(id, loaded, &mut buf).unwrap();
    assert_eq!(&buf[..n], bytes, "{name}: re-encoding differs from QEMU's");
    let mut back = fresh.clone();
    vmstate::load_section(&mut back, id, &buf[..n]).unwrap();
    assert_eq!(&back, loaded, "{name}: round trip");

    // Malformed inputs: each error is located and leaves the state as it was (`fresh`, which
    // differs from `loaded` for most devices, or `loaded` itself).
    let hl = rec.body_offset - rec.offset;
    let body_end = hl + rec.body.len();
    let mut refused = 0;
    let mut refuse =
        |what: &str, input: &[u8], want: SectionId<'_>, at: usize, field: Option<&str>| {
            for start in [fresh, loaded] {
                let mut s = start.clone();
                let e = vmstate::load_section(&mut s, want, input)
                    .expect_err(&format!("{name}: {what} must be refused"));
                assert_eq!(&s, start, "{name}: {what}: a failed load changed the state");
                assert_eq!(e.offset, at, "{name}: {what}: offset of {e}");
                assert_eq!(e.field, field, "{name}: {what}: field of {e}");
                let ctx = e
                    .section
                    .unwrap_or_else(|| panic!("{name}: {what}: no section in {e}"));
                assert_eq!(ctx.section_id, rec.section_id, "{name}: {what}: {e}");
                refused += 1;
            }
        };

    // Cut anywhere: in the header, the body or the footer.
    for cut in [hl - 1, hl, (hl + body_end) / 2, body_end, bytes.len() - 1] {
        let e = vmstate::load_section(&mut fresh.clone(), id, &bytes[..cut]).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Truncated { .. }) || cut < hl,
            "{name}: cut at {cut}: {e}"
        );
        assert!(
            e.offset <= cut,
            "{name}: cut at {cut}: error past the end: {e}"
        );
    }
    for cut in [(hl + body_end) / 2, body_end, bytes.len() - 1] {
        let e = vmstate::load_section(&mut fresh.clone(), id, &bytes[..cut]).unwrap_err();
        assert!(e.section.is_some(), "{name}: cut at {cut}: {e}");
        let mut s = loaded.clone();
        assert!(vmstate::load_section(&mut s, id, &bytes[..cut]).is_err());
        assert_eq!(&s, loaded, "{name}: cut at {cut} changed the state");
    }

    // Asked for another section id, idstr or instance.
    let other_id = SectionId {
        section_id: id.section_id + 1,
        ..id
    };
    refuse("another section id", bytes, other_id, 1, Some("section_id"));
    let other_idstr = SectionId {
        idstr: b"not-this-one",
        ..id
    };
    refuse("another idstr", bytes, other_idstr, 5, Some("idstr"));
    let other_instance = SectionId {
        instance_id: id.instance_id + 7,
        ..id
    };
    refuse(
        "another instance",
        bytes,
        other_instance,
        hl - 8,
        Some("instance_id"),
    );

    // A version the table does not accept.
    let mut newer = bytes.to_vec();
    newer[hl - 4..hl].copy_from_slice(&(T::VMSD.version_id + 1).to_be_bytes());
    refuse("a newer version", &newer, id, hl - 4, Some("version_id"));
    if T::VMSD.minimum_version_id > 0 {
        let mut older = bytes.to_vec();
        older[hl - 4..hl].copy_from_slice(&(T::VMSD.minimum_version_id - 1).to_be_bytes());
        refuse("an older version", &older, id, hl - 4, Some("version_id"));
    }

    // The footer: another id, a wrong marker, bytes after it.
    let mut other_footer = bytes.to_vec();
    other_footer[body_end + 4] ^= 1;
    refuse(
        "a footer with another id",
        &other_footer,
        id,
        body_end + 1,
        None,
    );
    let mut no_marker = bytes.to_vec();
    no_marker[body_end] = 0x7f;
    refuse("no footer marker", &no_marker, id, body_end, None);
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&bytes[..3]);
    refuse("bytes after the footer", &longer, id, bytes.len(), None);

    // A START header instead of FULL.
    let mut start = bytes.to_vec();
    start[0] = 0x01;
    refuse("a START section", &start, id, 0, None);
    refused
}

#[test]
fn every_device_loads_its_own_section_bytes_in_one_call() {
    let mut devices = std::collections::BTreeSet::new();
    for (name, stream) in FIXTURES {
        let mut pc = pc_for(name);
        let fresh = pc.clone();
        let secs = sections(stream);
        for s in &secs {
            pc.load_section(s).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let mut checked = 0;
        for s in &secs {
            let Some(slot) = pc.slot(s.idstr, s.instance_id) else {
                continue;
            };
            let bytes = &stream[s.offset..s.end()];
            let k = match slot {
                Slot::Timer => check(&pc.timer, &fresh.timer, s, bytes),
                Slot::FwCfg => check(&pc.fw_cfg, &fresh.fw_cfg, s, bytes),
                Slot::Pic(i) => check(&pc.pic[i as usize], &fresh.pic[i as usize], s, bytes),
                Slot::Ioapic => check(&pc.ioapic, &fresh.ioapic, s, bytes),
                Slot::Hpet => check(&pc.hpet, &fresh.hpet, s, bytes),
                Slot::Rtc => check(&pc.rtc, &fresh.rtc, s, bytes),
                Slot::Pit => check(&pc.pit, &fresh.pit, s, bytes),
                Slot::Pcspk => check(&pc.pcspk, &fresh.pcspk, s, bytes),
                Slot::Serial(i) => {
                    check(&pc.serial[i as usize], &fresh.serial[i as usize], s, bytes)
                }
                Slot::Port92 => check(&pc.port92, &fresh.port92, s, bytes),
                Slot::GlobalState => check(&pc.globalstate, &fresh.globalstate, s, bytes),
            };
            assert!(k >= 18, "{name}: {k} malformed inputs");
            devices.insert(format!("{slot:?}"));
            checked += 1;
        }
        assert!(checked >= 13, "{name}: only {checked} modelled sections");
    }
    // Every device model of this crate (both PIC and both serial instances).
    let want = [
        "Timer",
        "FwCfg",
        "Pic(0)",
        "Pic(1)",
        "Ioapic",
        "Hpet",
        "Rtc",
        "Pit",
        "Pcspk",
        "Serial(0)",
        "Serial(1)",
        "Port92",
        "GlobalState",
    ];
    for d in want {
        assert!(devices.contains(d), "{d} not covered: {devices:?}");
    }
}

/// The messages say what was expected and what was found.
#[test]
fn one_call_load_errors_read_well() {
    let (name, stream) = FIXTURES[0];
    let pc = pc_for(name);
    let secs = sections(stream);
    let s = secs.iter().find(|s| s.idstr == b"port92").unwrap();
    let bytes = &stream[s.offset..s.end()];
    let mut port92 = pc.port92;
    let want = SectionId {
        idstr: b"i8042",
        ..id_of(s)
    };
    let e = vmstate::load_section(&mut port92, want, bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "at byte 5 (0x5), section 'port92' instance 0 (id {}), field idstr: another section \
             than expected: expected idstr 'i8042'",
            s.section_id
        )
    );
    let want = SectionId {
        instance_id: 1,
        ..id_of(s)
    };
    let e = vmstate::load_section(&mut port92, want, bytes).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("field instance_id: invalid value: expected 0x1, found 0x0"),
        "{e}"
    );
}
