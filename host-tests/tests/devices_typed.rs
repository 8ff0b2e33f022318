//! Typed device models against real QEMU 7.2 and 10.0: every modelled section of every
//! fixture loads into its model and re-encodes byte-identically, the tables measure the same
//! body boundaries as the stream's own description, QEMU loads sections we re-encoded after
//! editing them, and our destination built from a machine type and build agrees with the real
//! QEMU on the q35 and i8259/ltim streams.

use vmstate::stream::{FooterScan, Options, Record, Records, Schemas};
use vmstate::wire::SectionKind;
use vmstate::{ErrorKind, Result, SectionId, SectionRecord, SliceSink};
use vmstate_devices::machine::Destination;
use vmstate_devices::pc::{MAX_STATE_SIZE, Pc, PcConfig, Slot, VMSDS};
use vmstate_host_tests::qemu::{LoadOutcome, Qemu, assert_pic_and_rtc_edits, temp_stream};
use vmstate_host_tests::{FIXTURES, QemuBuild, fixture};

fn config_for(name: &str) -> PcConfig {
    PcConfig {
        serial_ports: u8::from(name.contains("serial")),
        ..PcConfig::PC_7_2
    }
}

fn full_sections(stream: &[u8]) -> Vec<SectionRecord<'_>> {
    Records::new(stream, FooterScan)
        .filter_map(|r| match r.unwrap().record {
            Record::Section(s) if s.kind == SectionKind::Full => Some(s),
            _ => None,
        })
        .collect()
}

/// Loads every modelled section of `stream` into a fresh `Pc`.
fn load_all(name: &str, stream: &[u8]) -> Pc {
    let mut pc = Pc::new(config_for(name));
    for s in full_sections(stream) {
        pc.load_section(&s)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    pc
}

fn encode(pc: &Pc, slot: Slot, s: &SectionRecord<'_>) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 8192];
    let mut sink = SliceSink::new(&mut buf);
    let id = SectionId {
        section_id: s.section_id,
        idstr: s.idstr,
        instance_id: s.instance_id,
    };
    pc.encode_section(slot, id, &mut sink).unwrap();
    let n = sink.finish();
    buf.truncate(n);
    buf
}

#[test]
fn every_modelled_section_loads_and_reencodes_byte_identically() {
    for name in FIXTURES {
        let stream = fixture(name);
        let pc = load_all(name, &stream);
        assert_eq!(
            pc.missing().collect::<Vec<_>>(),
            vec![],
            "{name}: modelled sections not in the stream"
        );
        let mut modelled = 0;
        for s in full_sections(&stream) {
            let Some(slot) = pc.slot(s.idstr, s.instance_id) else {
                continue;
            };
            modelled += 1;
            assert_eq!(
                encode(&pc, slot, &s),
                &stream[s.offset..s.end()],
                "{name}: {slot:?}"
            );
        }
        assert_eq!(
            modelled,
            if name.contains("serial") { 12 } else { 11 },
            "{name}"
        );
    }
}

#[test]
fn tables_measure_the_same_boundaries_as_the_footer_scan() {
    let mut scratch = vec![0u8; MAX_STATE_SIZE];
    for name in FIXTURES {
        let stream = fixture(name);
        let by_scan: Vec<_> = Records::new(&stream[..], FooterScan)
            .collect::<Result<_>>()
            .unwrap();
        let by_table: Vec<_> =
            Records::new(&stream[..], (Schemas::new(VMSDS, &mut scratch), FooterScan))
                .collect::<Result<_>>()
                .unwrap();
        assert_eq!(by_scan, by_table, "{name}");
    }
}

#[test]
fn duplicates_and_rejected_sections_leave_the_machine_unchanged() {
    let stream = fixture("pc-7.2-nodefaults-S.vmstate");
    let mut pc = load_all("nodefaults", &stream);
    let before = pc.clone();
    let sections = full_sections(&stream);
    let pic = sections.iter().find(|s| s.idstr == b"i8259").unwrap();
    let e = pc.load_section(pic).unwrap_err();
    assert_eq!(e.kind, vmstate::ErrorKind::DuplicateSection);
    assert_eq!(pc, before);

    // A hostile rtc section (cmos_index 0x80, the CVE class of out-of-bounds CMOS access) into
    // a fresh machine: rejected with the field and its absolute offset, nothing changes.
    let rtc = sections.iter().find(|s| s.idstr == b"mc146818rtc").unwrap();
    let mut bad = stream.clone();
    bad[rtc.body_offset + 128] = 0x80;
    let bad_sections = full_sections(&bad);
    let bad_rtc = bad_sections
        .iter()
        .find(|s| s.idstr == b"mc146818rtc")
        .unwrap();
    let mut fresh = Pc::new(PcConfig::PC_7_2);
    let snapshot = fresh.clone();
    let e = fresh.load_section(bad_rtc).unwrap_err();
    assert_eq!(e.field, Some("cmos_index"));
    assert_eq!(e.offset, rtc.body_offset + 128);
    assert_eq!(e.section.unwrap().instance_id, 0);
    assert!(e.to_string().contains("mc146818rtc"), "{e}");
    assert_eq!(fresh, snapshot);
    assert!(!fresh.is_loaded(Slot::Rtc));
}

/// Re-encodes the edited modelled sections of `pc` into a copy of `stream` (same lengths).
fn splice(stream: &[u8], pc: &Pc) -> Vec<u8> {
    let mut out = stream.to_vec();
    for s in full_sections(stream) {
        if let Some(slot) = pc.slot(s.idstr, s.instance_id) {
            let bytes = encode(pc, slot, &s);
            assert_eq!(
                bytes.len(),
                s.end() - s.offset,
                "edits must not change lengths here"
            );
            out[s.offset..s.end()].copy_from_slice(&bytes);
        }
    }
    out
}

#[test]
fn qemu_loads_what_we_write_with_edits_visible() {
    let stream = fixture("pc-7.2-nodefaults-S.vmstate");
    let mut pc = load_all("nodefaults", &stream);
    // Unchanged re-encoding is the same stream.
    assert_eq!(splice(&stream, &pc), stream);

    pc.pic[0].body.imr = 0x5a;
    pc.pic[1].body.irq_base = 0x70;
    // CMOS year (BCD): 2031. With `-rtc clock=rt` QEMU recomputes the time from CMOS on load.
    pc.rtc.body.cmos_data[0x09] = 0x31;
    let edited = splice(&stream, &pc);
    assert_ne!(edited, stream);
    let path = temp_stream("edited.vmstate", &edited);

    let Some(mut q) = Qemu::incoming(&path, &["-rtc", "clock=rt"]) else {
        return;
    };
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed);
    let pic = q.hmp("info pic");
    println!(
        "QEMU after loading the edited stream:\n{}",
        pic.lines()
            .filter(|l| l.starts_with("pic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_pic_and_rtc_edits(&mut q);
    drop(q);
    let _ = std::fs::remove_file(path);

    // And a hostile edit QEMU itself would accept is refused by our loader: the same stream
    // with a PIT count of 0 (CVE-2015-7513, divide by zero in KVM's PIT).
    let sections = full_sections(&stream);
    let pit = sections.iter().find(|s| s.idstr == b"i8254").unwrap();
    let mut bad = stream.clone();
    bad[pit.body_offset + 4..pit.body_offset + 8].copy_from_slice(&[0, 0, 0, 0]);
    let mut fresh = Pc::new(PcConfig::PC_7_2);
    let e = full_sections(&bad)
        .iter()
        .find_map(|s| fresh.load_section(s).err())
        .expect("count 0 rejected");
    assert_eq!(e.field, Some("count"), "{e}");
}

/// Our typed destination's verdict on `stream` for `machine` on `build` (two ISA serial
/// ports, as DEVICES configures): every section of a modelled type loaded, or the first error.
fn our_verdict(stream: &[u8], machine: &str, build: QemuBuild) -> Result<usize, vmstate::Error> {
    let dest = Destination::parse(machine.as_bytes(), Some(build)).unwrap();
    let mut config = dest.config();
    config.serial_ports = 2;
    let mut pc = Pc::new(config);
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    let mut typed = 0;
    for r in Records::with_options(stream, FooterScan, options) {
        if let Record::Section(s) = r.unwrap().record
            && s.kind == SectionKind::Full
        {
            typed += usize::from(pc.load_section(&s)?);
        }
    }
    assert_eq!(pc.missing().count(), 0, "{machine}");
    Ok(typed)
}

/// Loads `fixture` into the real `build` with the machine options that wrote it.
fn qemu_loads(build: QemuBuild, fixture_name: &str, machine: &str) -> Option<LoadOutcome> {
    let path = vmstate_host_tests::fixture_path(fixture_name);
    let args = vmstate_host_tests::qemu::fixture_machine(machine);
    let mut q = Qemu::incoming_on(build, &path, &args)?;
    Some(q.wait_loaded())
}

/// q35 streams of both builds and the i8259/ltim stream: the real QEMU 10.0 (and QEMU 7.2 for
/// its own q35 stream) loads them with the machine type they name, and so does our typed
/// destination built from that machine type — before machine types were modelled, every q35
/// stream was refused for its HPET intcap and the ltim stream for an unknown subsection.
#[test]
fn real_qemu_and_our_models_load_the_q35_and_ltim_streams() {
    let cases = [
        ("q10-pc-q35-10.0.vmstate", "pc-q35-10.0", QemuBuild::V10_0),
        ("q10-pc-q35-7.2.vmstate", "pc-q35-7.2", QemuBuild::V10_0),
        ("q72-pc-q35-7.2.vmstate", "pc-q35-7.2", QemuBuild::V10_0),
        ("q72-pc-q35-7.2.vmstate", "pc-q35-7.2", QemuBuild::V7_2),
        (
            "q10-pc-i440fx-7.2-ltim.vmstate",
            "pc-i440fx-7.2",
            QemuBuild::V10_0,
        ),
    ];
    for (name, machine, build) in cases {
        let stream = fixture(name);
        let typed = our_verdict(&stream, machine, build)
            .unwrap_or_else(|e| panic!("{name} on {machine}/{build:?}: we refuse: {e}"));
        assert_eq!(typed, 13, "{name}");
        let Some(outcome) = qemu_loads(build, name, machine) else {
            return;
        };
        assert_eq!(
            outcome,
            LoadOutcome::Completed,
            "{name} into {build:?} {machine}"
        );
    }
}

/// The ltim stream into QEMU 7.2 with `-M pc-i440fx-7.2`: QEMU refuses it (it does not know
/// the subsection), and so do our models for a QEMU 7.2 destination (and `vmstate verify
/// --qemu 7.2`, see cli_verify), naming the subsection.
#[test]
fn qemu_7_2_and_our_7_2_destination_refuse_the_ltim_stream() {
    let name = "q10-pc-i440fx-7.2-ltim.vmstate";
    let e = our_verdict(&fixture(name), "pc-i440fx-7.2", QemuBuild::V7_2).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::UnknownSubsection { .. }), "{e}");
    assert!(e.to_string().contains("i8259/ltim"), "{e}");
    assert_eq!(e.section.unwrap().idstr.as_bytes(), b"i8259");
    // QEMU 7.2 exits (status 1) as soon as the load fails.
    let Some(outcome) = qemu_loads(QemuBuild::V7_2, name, "pc-i440fx-7.2") else {
        return;
    };
    match outcome {
        LoadOutcome::Failed(stderr) => assert!(
            stderr.contains("i8259"),
            "QEMU 7.2 refuses, naming the device: {stderr}"
        ),
        LoadOutcome::Completed => panic!("QEMU 7.2 loaded the ltim stream"),
    }
}
