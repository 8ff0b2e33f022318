//! `vmstate verify` on the QEMU 7.2 fixtures and on hostile streams made from them: one
//! diagnostic per problem, naming offset, section and field, exit status 1.

use std::path::PathBuf;
use std::process::{Command, Output};
use vmstate::stream::{FooterScan, Record, Records};
use vmstate::wire::Trailer;
use vmstate::wire::section::SectionKind;
use vmstate::{SectionId, SectionRecord};
use vmstate_cli::exit::Exit;

const FIXTURES: &[&str] = &["pc-7.2-nodefaults-S", "pc-7.2-bios", "pc-7.2-serial"];

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .expect("run vmstate")
}

/// Runs `vmstate verify` on `bytes` (written to a temp file named `name`).
fn verify(name: &str, bytes: &[u8], extra: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("vmstate-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut args = vec!["verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    std::fs::remove_file(&path).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.is_empty(), "{name}: stderr {err}");
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stdout).unwrap(),
    )
}

fn full_sections(stream: &[u8]) -> Vec<SectionRecord<'_>> {
    Records::new(stream, FooterScan)
        .filter_map(|r| match r.unwrap().record {
            Record::Section(s) if s.kind == SectionKind::Full => Some(s),
            _ => None,
        })
        .collect()
}

/// (offset of the record, offset of the body, end of the record) of a FULL section.
fn section(stream: &[u8], idstr: &[u8], instance: u32) -> (usize, usize, usize) {
    let s = full_sections(stream)
        .into_iter()
        .find(|s| s.idstr == idstr && s.instance_id == instance)
        .unwrap();
    (s.offset, s.body_offset, s.end())
}

/// The diagnostic lines that mention `section` and `field`, with their byte offsets.
fn problems<'o>(out: &'o str, section: &str, field: &str) -> Vec<(&'o str, usize)> {
    out.lines()
        .filter(|l| l.contains(section) && l.contains(field))
        .map(|l| {
            let at = l.split("at byte ").nth(1).expect("offset in diagnostic");
            let n = at.split(' ').next().unwrap().parse().unwrap();
            (l, n)
        })
        .collect()
}

/// Asserts exactly one diagnostic for `section` / `field`, at `offset`.
fn assert_problem(out: &str, section: &str, field: &str, offset: usize, found: &str) {
    let p = problems(out, section, field);
    assert_eq!(p.len(), 1, "{section} {field}:\n{out}");
    assert_eq!(p[0].1, offset, "{}", p[0].0);
    assert!(p[0].0.contains(found), "{}", p[0].0);
}

fn without_trailer(stream: &[u8]) -> Vec<u8> {
    stream[..Trailer::locate(stream).unwrap()].to_vec()
}

#[test]
fn every_fixture_verifies() {
    for f in FIXTURES {
        let bytes = fixture(&format!("{f}.vmstate"));
        let (code, out) = verify("ok.vmstate", &bytes, &[]);
        assert_eq!(code, 0, "{f}: {out}");
        let typed = if f.contains("serial") { 12 } else { 11 };
        assert!(
            out.ends_with(&format!(
                ": ok: {typed} sections checked with typed models, 19 with the description only, 8326 RAM records, {} bytes\n",
                bytes.len()
            )),
            "{f}: {out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn without_a_description_the_unchecked_sections_are_named() {
    let bytes = without_trailer(&fixture("pc-7.2-bios.vmstate"));
    let (code, out) = verify("notrailer.vmstate", &bytes, &[]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("not checked (no VMDESCRIPTION trailer and no typed model): 'cpu_common' instance 0, 'cpu' instance 0"),
        "{out}"
    );
    assert!(
        lines[0].contains("'0000:00:01.3/piix4_pm' instance 0"),
        "{out}"
    );
    assert!(
        lines[1].contains("ok: 11 sections checked with typed models, 0 with the description"),
        "{out}"
    );
}

#[test]
fn several_bad_sections_are_all_listed() {
    let good = fixture("pc-7.2-nodefaults-S.vmstate");
    let mut bad = good.clone();
    let (_, rtc, _) = section(&good, b"mc146818rtc", 0);
    let (_, pit, _) = section(&good, b"i8254", 0);
    let (_, pic, _) = section(&good, b"i8259", 0);
    let (_, fw, _) = section(&good, b"fw_cfg", 0);
    let (_, ioapic, _) = section(&good, b"ioapic", 0);
    bad[rtc + 128] = 0x80; // cmos_index
    bad[pit + 4..pit + 8].copy_from_slice(&0i32.to_be_bytes()); // channels[0].count
    bad[pic + 4] = 9; // priority_add
    bad[fw..fw + 2].copy_from_slice(&0x1234u16.to_be_bytes()); // cur_entry
    bad[ioapic] = 0x10; // id
    let (code, out) = verify("several.vmstate", &bad, &[]);
    assert_eq!(code, 1, "{out}");
    assert_problem(
        &out,
        "section 'mc146818rtc' instance 0",
        "field cmos_index",
        rtc + 128,
        "found 0x80",
    );
    assert_problem(&out, "section 'i8254' instance 0", "count", pit + 4, "");
    assert_problem(
        &out,
        "section 'i8259' instance 0",
        "field priority_add",
        pic + 4,
        "found 0x9",
    );
    assert_problem(
        &out,
        "section 'fw_cfg' instance 0",
        "field cur_entry",
        fw,
        "found 0x1234",
    );
    assert_problem(
        &out,
        "section 'ioapic' instance 0",
        "field id",
        ioapic,
        "found 0x10",
    );
    assert!(out.ends_with(": 5 problems found\n"), "{out}");
    // Each alone is refused too.
    for (at, v) in [(rtc + 128, 0x80u8), (pic + 4, 9), (ioapic, 0x10)] {
        let mut one = good.clone();
        one[at] = v;
        let (code, out) = verify("one.vmstate", &one, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.ends_with(": 1 problem found\n"), "{out}");
    }
}

#[test]
fn globalstate_without_nul_is_refused() {
    let good = fixture("pc-7.2-bios.vmstate");
    let (_, body, end) = section(&good, b"globalstate", 0);
    let mut bad = good.clone();
    bad[body + 4..body + 104].fill(b'A');
    assert_eq!(end, body + 104 + 5);
    // QEMU 7.2 reads a 100-byte buffer; QEMU 10.0 (the default destination build) a 32-byte
    // one.
    for (extra, rule) in [
        (&["--qemu", "7.2"][..], "a NUL within the 100-byte buffer"),
        (&[][..], "a NUL within the 32-byte buffer"),
    ] {
        let (code, out) = verify("globalstate.vmstate", &bad, extra);
        assert_eq!(code, 1, "{out}");
        let p = problems(&out, "section 'globalstate' instance 0", "field runstate");
        assert_eq!(p.len(), 1, "{out}");
        assert!((body..body + 104).contains(&p[0].1), "{}", p[0].0);
        assert!(p[0].0.contains(rule), "{}", p[0].0);
    }
}

/// hpet body: config, isr, counter (8 bytes each), num_timers, then 42-byte timers.
const HPET_TIMERS: usize = 25;
const HPET_TIMER_LEN: usize = 42;

#[test]
fn hpet_timer_count_and_index_are_checked() {
    let good = fixture("pc-7.2-nodefaults-S.vmstate");
    let (_, body, _) = section(&good, b"hpet", 0);

    // tn of timer 1 says 5.
    let mut bad = good.clone();
    bad[body + HPET_TIMERS + HPET_TIMER_LEN] = 5;
    let (code, out) = verify("hpet-tn.vmstate", &bad, &[]);
    assert_eq!(code, 1, "{out}");
    let p = problems(&out, "section 'hpet' instance 0", "field timer");
    assert_eq!(p.len(), 1, "{out}");
    assert!(p[0].0.contains("expected 0x1, found 0x5"), "{}", p[0].0);
    assert!(
        (body + HPET_TIMERS..body + HPET_TIMERS + 3 * HPET_TIMER_LEN).contains(&p[0].1),
        "{}",
        p[0].0
    );

    // Four timers (a copy of timer 2 as timer 3): the destination has three. The trailer
    // describes three, so it is left out; the typed model still finds the body's end.
    let mut four = without_trailer(&good);
    let t2 = body + HPET_TIMERS + 2 * HPET_TIMER_LEN;
    let mut t3 = four[t2..t2 + HPET_TIMER_LEN].to_vec();
    t3[0] = 3;
    four.splice(t2 + HPET_TIMER_LEN..t2 + HPET_TIMER_LEN, t3);
    four[body + 24] = 4;
    let (code, out) = verify("hpet-4.vmstate", &four, &[]);
    assert_eq!(code, 1, "{out}");
    assert_problem(
        &out,
        "section 'hpet' instance 0",
        "field num_timers",
        body + 24,
        "expected 0x3, found 0x4",
    );
    // Sections after the hpet were still reached and checked.
    assert!(out.contains("1 problem found"), "{out}");
    // A destination configured with four timers accepts it.
    let (code, out) = verify("hpet-4.vmstate", &four, &["--hpet-timers", "4"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 11 sections checked with typed models"),
        "{out}"
    );
}

#[test]
fn serial_fifo_head_out_of_range_is_refused() {
    use vmstate_devices::serial::IsaSerial;
    let good = fixture("pc-7.2-serial.vmstate");
    let sections = full_sections(&good);
    let rec = sections.iter().find(|s| s.idstr == b"serial").unwrap();
    let mut uart = IsaSerial::new();
    vmstate::load_record(&mut uart, rec).unwrap();
    // One byte in the receive FIFO, head one past its 16 bytes: the subsection is sent.
    uart.state.recv_fifo.num = 1.into();
    uart.state.recv_fifo.head = 16.into();
    let mut buf = vec![0u8; 4096];
    let id = SectionId {
        section_id: rec.section_id,
        idstr: rec.idstr,
        instance_id: rec.instance_id,
    };
    let n = vmstate::encode_section_into(id, &uart, &mut buf).unwrap();
    let (start, end) = (rec.offset, rec.end());
    let body = rec.body_offset;
    let mut bad = good.clone();
    bad.splice(start..end, buf[..n].iter().copied());
    let (code, out) = verify("serial.vmstate", &bad, &[]);
    assert_eq!(code, 1, "{out}");
    let p = problems(&out, "section 'serial' instance 0", "head");
    assert_eq!(p.len(), 1, "{out}");
    assert!(p[0].0.contains("found 0x10"), "{}", p[0].0);
    assert!((body..start + n).contains(&p[0].1), "{}", p[0].0);
    // The stream's own description does not list the FIFO subsection: also a problem, and
    // the walk went on to the sections after it.
    assert!(
        out.contains("'serial' instance 0, against the stream's description"),
        "{out}"
    );
    assert!(out.ends_with(": 2 problems found\n"), "{out}");
}

#[test]
fn a_duplicate_section_is_refused() {
    let good = fixture("pc-7.2-nodefaults-S.vmstate");
    let (start, _, end) = section(&good, b"i8259", 0);
    let eof = Trailer::locate(&good).unwrap() - 1;
    // A copy of the section under a fresh section id, just before EOF.
    let mut copy = good[start..end].to_vec();
    copy[1..5].copy_from_slice(&200u32.to_be_bytes());
    let n = copy.len();
    copy[n - 4..].copy_from_slice(&200u32.to_be_bytes());
    let mut bad = good.clone();
    bad.splice(eof..eof, copy);
    let (code, out) = verify("dup.vmstate", &bad, &[]);
    assert_eq!(code, 1, "{out}");
    assert_problem(
        &out,
        "section 'i8259' instance 0 (id 200)",
        "occurs twice",
        eof,
        "",
    );
    // The copy is described by the same entry (sections find their entry by idstr and
    // instance id): the repeat is the one problem.
    assert!(out.ends_with(": 1 problem found\n"), "{out}");
    assert!(!out.contains("not in the stream's description"), "{out}");
}

#[test]
fn a_ram_page_outside_its_block_is_refused() {
    let good = fixture("pc-7.2-nodefaults-S.vmstate");
    // The first PAGE record that continues the previous block: 8-byte header, then data.
    let mut header = None;
    for r in Records::new(&good[..], FooterScan) {
        let Record::Section(s) = r.unwrap().record else {
            continue;
        };
        if !s.is_ram() || s.kind != SectionKind::Part {
            continue;
        }
        let mut ram = vmstate::ram::RamContext::new(Default::default());
        // The block list comes from the START section; read it first.
        let start = full_or_start(&good);
        let mut r0 = vmstate::wire::Reader::new(start.body, start.body_offset);
        ram.read_record(&mut r0).unwrap();
        let mut rd = vmstate::wire::Reader::new(s.body, s.body_offset);
        loop {
            let before = rd.offset();
            match ram.read_record(&mut rd).unwrap() {
                vmstate::ram::RamRecord::Page { data, .. }
                    if data.as_ptr() as usize - good.as_ptr() as usize == before + 8 =>
                {
                    header = Some(before);
                    break;
                }
                vmstate::ram::RamRecord::Eos => break,
                _ => {}
            }
        }
        break;
    }
    let at = header.expect("a CONTINUE page record");
    let mut bad = good.clone();
    let word = u64::from_be_bytes(bad[at..at + 8].try_into().unwrap());
    let far = (1u64 << 40) | (word & 0xfff);
    bad[at..at + 8].copy_from_slice(&far.to_be_bytes());
    let (code, out) = verify("ram.vmstate", &bad, &[]);
    assert_eq!(code, 1, "{out}");
    let p = problems(&out, "section 'ram' instance 0", "outside");
    assert_eq!(p.len(), 1, "{out}");
    assert_eq!(p[0].1, at, "{}", p[0].0);
}

fn full_or_start(stream: &[u8]) -> SectionRecord<'_> {
    Records::new(stream, FooterScan)
        .find_map(|r| match r.unwrap().record {
            Record::Section(s) if s.is_ram() && s.kind == SectionKind::Start => Some(s),
            _ => None,
        })
        .unwrap()
}

#[test]
fn usage_and_io_errors_exit_102_and_103() {
    for (args, exit) in [
        (vec!["verify"], Exit::Usage),
        (vec!["verify", "/nonexistent/stream"], Exit::Unreadable),
        (vec!["verify", "x", "--hpet-timers", "300"], Exit::Usage),
        (vec!["verify", "x", "--qemu", "8.2"], Exit::Usage),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(exit.status()), "{args:?}");
    }
    // Not a stream at all: one problem, exit 1.
    let (code, out) = verify("text.vmstate", b"hello, world", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("at byte 0 (0x0): not a migration stream"),
        "{out}"
    );
}

/// Every real stream in host-tests/fixtures, of both builds (pc and q35, older machine types
/// on the newer build, x-ignore-shared, i8259/ltim, mapped-ram), verifies against the destination its
/// CONFIGURATION names, every modelled section (both ISA serial ports) by its typed model.
#[test]
fn every_fixture_of_both_builds_verifies() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host-tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // pc-i440fx-2.2 writes no footers and no trailer: verify names the first section it
        // cannot measure (`a_stream_without_footers_or_trailer_is_measured_by_the_typed_models`).
        .filter(|n| n.ends_with(".vmstate") && !n.contains("-2.2."))
        .collect();
    names.sort();
    assert_eq!(names.len(), 14, "{names:?}");
    for name in names {
        let bytes = fixture(&name);
        let (code, out) = verify("all.vmstate", &bytes, &[]);
        assert_eq!(code, 0, "{name}: {out}");
        // The mapped-ram fixtures have no added devices (no serial ports).
        let typed = if name.contains("mapped-ram") {
            11
        } else if name.starts_with('q') {
            13
        } else if name.contains("serial") {
            12
        } else {
            11
        };
        assert!(
            out.contains(&format!(
                ": ok: {typed} sections checked with typed models, "
            )),
            "{name}: {out}"
        );
        assert!(out.ends_with(" bytes\n"), "{name}: {out}");
        assert_eq!(out.lines().count(), 1, "{name}: {out}");
    }
}

/// The byte offset of a fixture's CONFIGURATION machine name (after `07 be32-len`).
const MACHINE_NAME_AT: usize = 8 + 1 + 4;

fn renamed(stream: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut b = stream.to_vec();
    let at = MACHINE_NAME_AT;
    assert_eq!(&b[at..at + from.len()], from.as_bytes());
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    b
}

#[test]
fn machine_type_problems_are_reported() {
    let q35 = fixture("q72-pc-q35-7.2.vmstate");
    // The destination's machine type differs from the stream's: QEMU's own refusal, then what
    // the destination's devices say (the q35 HPET's intcap is not pc's).
    let (code, out) = verify("q35.vmstate", &q35, &["--machine", "pc-i440fx-7.2"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].ends_with(
            ": at byte 8 (0x8), CONFIGURATION: stream machine type pc-q35-7.2, destination \
             pc-i440fx-7.2: QEMU refuses the stream (\"Machine type received is 'pc-q35-7.2' \
             and local is 'pc-i440fx-7.2'\")"
        ),
        "{out}"
    );
    assert!(
        lines[1].contains("section 'hpet' instance 0 (id 21), field timer: invalid value: expected 0x400000030, found 0xff010400000030"),
        "{out}"
    );
    assert!(out.ends_with(": 2 problems found\n"), "{out}");
    // The same machine type, spelled as QEMU's alias for the build's newest.
    let (code, out) = verify("q35.vmstate", &q35, &["--machine", "q35", "--qemu", "7.2"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify("q35.vmstate", &q35, &["--machine", "pc-q35-7.2"]);
    assert_eq!(code, 0, "{out}");
    // A build that lacks the stream's machine type.
    let new = fixture("q10-pc-i440fx-10.0.vmstate");
    let (code, out) = verify("new.vmstate", &new, &["--qemu", "7.2"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "at byte 8 (0x8), CONFIGURATION: stream machine type pc-i440fx-10.0: QEMU 7.2 has \
             no machine type pc-i440fx-10.0; the typed device models are not applied"
        ),
        "{out}"
    );
    // Stream machine types that are not modelled are reported, not guessed.
    let pc = fixture("q72-pc-i440fx-7.2.vmstate");
    for (to, why) in [
        (
            "pc-i440fx-2.0",
            "pc-i440fx-2.0 is older than the oldest modelled machine type (2.4)",
        ),
        (
            "pc-i440fx-9.9",
            "QEMU 10.0 has no machine type pc-i440fx-9.9",
        ),
        (
            "microvm-7.2xx",
            "not a pc-i440fx-X.Y or pc-q35-X.Y machine type",
        ),
    ] {
        let (code, out) = verify("old.vmstate", &renamed(&pc, "pc-i440fx-7.2", to), &[]);
        assert_eq!(code, 1, "{to}: {out}");
        assert!(
            out.contains(&format!("CONFIGURATION: stream machine type {to}: {why}")),
            "{out}"
        );
        assert!(out.ends_with(": 1 problem found\n"), "{to}: {out}");
    }
    // An unknown --machine is a usage error.
    for m in ["pc-i440fx-2.0", "microvm", "pc-q35-10.0"] {
        let o = run(&["verify", "x", "--machine", m, "--qemu", "7.2"]);
        assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{m}");
        assert!(
            String::from_utf8(o.stderr)
                .unwrap()
                .contains(&format!("--machine {m}: ")),
            "{m}"
        );
    }
}

#[test]
fn a_subsection_only_newer_builds_know_is_refused_by_a_7_2_destination() {
    let ltim = fixture("q10-pc-i440fx-7.2-ltim.vmstate");
    let (code, out) = verify("ltim.vmstate", &ltim, &[]);
    assert_eq!(code, 0, "{out}");
    let (_, body, _) = section(&ltim, b"i8259", 0);
    let (code, out) = verify("ltim.vmstate", &ltim, &["--qemu", "7.2"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split(": ")
            .skip(1)
            .collect::<Vec<_>>()
            .join(": "),
        format!(
            "at byte {} (0x{:x}), section 'i8259' instance 0 (id 21): unknown subsection \
             i8259/ltim (the destination, pc-i440fx-7.2 on QEMU 7.2, does not know it: QEMU \
             refuses the stream)",
            body + 16,
            body + 16
        ),
        "{out}"
    );
    assert!(out.ends_with(": 1 problem found\n"), "{out}");
}

/// Every `serial` section is the serial model's: a port the destination lacks is refused (as
/// QEMU refuses it), and a third port the stream adds is checked by the model, not by the
/// description alone.
#[test]
fn every_serial_port_is_checked_by_the_model() {
    let good = fixture("q72-pc-i440fx-7.2.vmstate");
    let (at, _, _) = section(&good, b"serial", 1);
    let (code, out) = verify("ports.vmstate", &good, &["--serial-ports", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "at byte {at} (0x{at:x}), section 'serial' instance 1 (id 26): the destination \
             (pc-i440fx-7.2 on QEMU 10.0, ISA serial ports: 1) has no such instance; QEMU \
             refuses the stream (\"Unknown savevm section or instance 'serial' 1\")"
        )),
        "{out}"
    );
    // The second port renumbered as a third (instance 2), with an IER bit the guest cannot
    // set: the serial model refuses it. Without a trailer, nothing else could check it.
    let mut third = without_trailer(&good);
    let instance_at = at + 1 + 4 + 1 + b"serial".len();
    third[instance_at..instance_at + 4].copy_from_slice(&2u32.to_be_bytes());
    let (_, body, _) = section(&good, b"serial", 1);
    let (code, out) = verify("ports.vmstate", &third, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 13 sections checked with typed models"),
        "{out}"
    );
    third[body + 3] = 0xf0;
    let (code, out) = verify("ports.vmstate", &third, &[]);
    assert_eq!(code, 1, "{out}");
    assert_problem(
        &out,
        "section 'serial' instance 2",
        "field ier",
        body + 3,
        "0xf0",
    );
    // A fifth port: a PC has four.
    third[instance_at..instance_at + 4].copy_from_slice(&4u32.to_be_bytes());
    let (code, out) = verify("ports.vmstate", &third, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("section 'serial' instance 4 (id 26): the destination (pc-i440fx-7.2 on QEMU 10.0) has no such instance"), "{out}");
}

/// `rewrite --set` checks edits against the destination the stream's machine type gives (or
/// `--machine` / `--serial-ports`): an edit of a q35 stream's hpet passes on pc-q35 and is
/// refused against pc's HPET, and an edit of a serial port the destination lacks is refused.
#[test]
fn rewrite_checks_edits_against_the_machine_types_models() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures/q72-pc-q35-7.2.vmstate");
    let src = src.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("vmstate-verify-rw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("edited.vmstate");
    let out = out.to_str().unwrap();
    let hpet = "hpet[0].timer[0].cmp=0x1234";
    let o = run(&["rewrite", src, out, "--set", hpet]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (code, text) = verify("edited.vmstate", &std::fs::read(out).unwrap(), &[]);
    assert_eq!(code, 0, "{text}");
    let o = run(&[
        "rewrite",
        src,
        out,
        "--set",
        hpet,
        "--machine",
        "pc-i440fx-7.2",
    ]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "the hpet model refuses the edited body: field timer: invalid value: expected \
             0x400000030, found 0xff010400000030"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let scr = "serial[1].state.scr=0x42";
    let o = run(&["rewrite", src, out, "--set", scr]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&["rewrite", src, out, "--set", scr, "--serial-ports", "1"]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("the destination (pc-q35-7.2 on QEMU 10.0) has no serial instance 1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A COMMAND record is judged by the destination build: SWITCHOVER_START (QEMU 10.0) spliced
/// into a real pc-i440fx-7.2 stream before its RAM END record is fine for 10.0 and refused
/// for 7.2 ("MIG_CMD 0xb unknown"; host-tests/tests/destination_rules.rs shows both builds
/// doing so).
#[test]
fn commands_follow_the_destination_build() {
    let original = fixture("q10-pc-i440fx-7.2.vmstate");
    // RAM is section id 1 in QEMU 10.0 streams: the last PART's footer, then END's header.
    let end = b"\x7e\x00\x00\x00\x01\x03\x00\x00\x00\x01";
    let at = original
        .windows(end.len())
        .rposition(|w| w == end)
        .expect("RAM END")
        + 5;
    let mut with_cmd = original[..at].to_vec();
    with_cmd.extend_from_slice(&[0x08, 0x00, 0x0b, 0x00, 0x00]);
    with_cmd.extend_from_slice(&original[at..]);
    let (code, out) = verify("switchover.vmstate", &with_cmd, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify("switchover.vmstate", &with_cmd, &["--qemu", "7.2"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "at byte {at} (0x{at:x}): COMMAND SWITCHOVER_START (11) is unknown to the destination (QEMU 7.2"
        )),
        "{out}"
    );
}

/// QEMU 7.2 with `-M pc-i440fx-2.2` writes no CONFIGURATION record, no section footers and no
/// trailer: verify checks what the RAM parser and the typed models measure (timer) and names
/// the first section nothing can measure.
#[test]
fn a_stream_without_footers_or_trailer_is_measured_by_the_typed_models() {
    let bytes = fixture("q72-pc-i440fx-2.2.vmstate");
    assert!(!vmstate::stream::probe_section_footers(&bytes));
    let (code, out) = verify("old.vmstate", &bytes, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "at byte 271753 (0x42589), section 'cpu_common' instance 0 (id 4): cannot tell \
             where the section body ends"
        ),
        "{out}"
    );
    assert!(out.ends_with(": 1 problem found\n"), "{out}");
}
