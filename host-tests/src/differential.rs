//! Differential testing of `vmstate verify` against the real QEMU (issue 13, item 14).
//!
//! A campaign mutates the real second-generation fixtures (both builds' streams, the machine
//! types both builds model) in the ways that decide a load: the field values of the modelled
//! devices (at and around the boundary of every load rule: small integers, the rule constants
//! of `devices/src/*.rs`, the original value ±1, one flipped bit, the width's extremes),
//! subsection presence, names, versions and length bytes, section versions, instance ids,
//! idstr lengths, body lengths, dropped and repeated sections, and COMMAND records of every
//! number with payload lengths around each command's rule. Each mutant is loaded into every
//! QEMU build that has the fixture's machine type (`-incoming "exec:cat FILE"`, the fixture's
//! devices) and given to [`vmstate_cli::verify::verify`] with the same machine type and build.
//!
//! Verdicts ([`Class`]):
//! * both accept or both refuse: **agree**;
//! * `verify` refuses what QEMU loads: a **documented hardening rule** when every problem
//!   `verify` lists maps ([`rule_of`]) to a rule of [`HARDENING`] (each is named and justified
//!   there and in `docs/DIFFERENTIAL.md`), else an **undocumented refusal** (a disagreement);
//! * QEMU refuses what `verify` accepts: a **looser** disagreement (must be fixed in the
//!   device models or in `verify`), unless [`EXPLAINED`] explains QEMU's refusal.
//!
//! Everything is deterministic given the seed: the same seed gives the same mutants.

use crate::qemu::{self, LoadOutcome, Qemu};
use crate::{QemuBuild, Rng, fixture, fixture_path};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use vmstate::stream::{FooterScan, Options, Record, Records};
use vmstate_cli::verify::{DestSpec, verify};
use vmstate_devices::pc::{Pc, PcConfig};

/// A fixture of the campaign: file, machine type, and the builds that have the machine type.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    /// The `.vmstate` file in `host-tests/fixtures/` (its `.desc.json` is next to it).
    pub file: &'static str,
    /// The machine type it was written with (the destination's `-M`).
    pub machine: &'static str,
    /// The builds that define that machine type.
    pub builds: &'static [QemuBuild],
}

const BOTH: &[QemuBuild] = &[QemuBuild::V7_2, QemuBuild::V10_0];
const NEW: &[QemuBuild] = &[QemuBuild::V10_0];

/// The fixtures mutated: every second-generation stream whose machine type `verify` models,
/// except the x-ignore-shared ones (their destination needs the shared RAM file and the
/// capability set before the load; RAM is not what this campaign is about).
pub const FIXTURES: &[Fixture] = &[
    Fixture {
        file: "q72-pc-i440fx-7.2.vmstate",
        machine: "pc-i440fx-7.2",
        builds: BOTH,
    },
    Fixture {
        file: "q72-pc-q35-7.2.vmstate",
        machine: "pc-q35-7.2",
        builds: BOTH,
    },
    Fixture {
        file: "q10-pc-i440fx-10.0.vmstate",
        machine: "pc-i440fx-10.0",
        builds: NEW,
    },
    Fixture {
        file: "q10-pc-q35-10.0.vmstate",
        machine: "pc-q35-10.0",
        builds: NEW,
    },
    Fixture {
        file: "q10-pc-i440fx-7.2.vmstate",
        machine: "pc-i440fx-7.2",
        builds: BOTH,
    },
    Fixture {
        file: "q10-pc-q35-7.2.vmstate",
        machine: "pc-q35-7.2",
        builds: BOTH,
    },
    Fixture {
        file: "q10-pc-i440fx-7.2-ltim.vmstate",
        machine: "pc-i440fx-7.2",
        builds: BOTH,
    },
];

/// A documented hardening rule: `verify` refuses, QEMU loads. `id` is what [`rule_of`] maps a
/// problem of `verify` to.
#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    /// The rule's name (`device.field` for a device rule, `stream.*` / `trailer.*` else).
    pub id: &'static str,
    /// Why `verify` refuses what QEMU loads.
    pub why: &'static str,
}

/// Every documented hardening rule (`docs/DIFFERENTIAL.md` lists the same, a test checks).
pub const HARDENING: &[Hardening] = &[
    // i8259 (devices/src/i8259.rs): QEMU 7.2/10.0 load any byte into these fields.
    h(
        "i8259.priority_add",
        "MUST: an index into the 8-entry priority rotation",
    ),
    h(
        "i8259.irq_base",
        "guest stores val & 0xf8; unaligned base overflows the vector",
    ),
    h(
        "i8259.read_reg_select",
        "a single OCW3 bit; the guest cannot store more",
    ),
    h("i8259.poll", "a single OCW3 bit"),
    h("i8259.special_mask", "a single OCW3 bit"),
    h(
        "i8259.init_state",
        "ICW step 0..=3 (state-machine dispatch)",
    ),
    h("i8259.auto_eoi", "a single ICW4 bit"),
    h("i8259.rotate_on_auto_eoi", "a single bit"),
    h("i8259.special_fully_nested_mode", "a single ICW4 bit"),
    h("i8259.init4", "a single ICW1 bit"),
    h("i8259.single_mode", "the guest stores val & 2: 0 or 2"),
    h("i8259.elcr", "ELCR writes are masked with elcr_mask"),
    h("i8259.ltim", "the guest stores val & 8: 0 or 8"),
    // i8254
    h(
        "i8254.count",
        "MUST: a divisor (0 divides by zero), at most 0x10000",
    ),
    h("i8254.mode", "modes 0..=7"),
    h("i8254.rw_mode", "0..=3"),
    h("i8254.read_state", "0..=4"),
    h("i8254.write_state", "0..=4"),
    h("i8254.count_latched", "0..=3"),
    h("i8254.status_latched", "a flag"),
    h("i8254.bcd", "a flag"),
    h("i8254.gate", "a flag"),
    h(
        "i8254.channels.irq_disabled",
        "a flag only the HPET legacy mode toggles",
    ),
    h(
        "i8254.channels.next_transition_time",
        "one variable in QEMU, two copies on the wire",
    ),
    // ioapic
    h("ioapic.id", "the id register stores 4 bits"),
    h("ioapic.irr", "only pins 0..=23 raise a request"),
    // rtc
    h("mc146818rtc.cmos_index", "MUST: indexes cmos_data[128]"),
    h(
        "mc146818rtc.irq_reinject_on_ack_count",
        "the device counts up to 20 only",
    ),
    // hpet
    h(
        "hpet.num_timers",
        "MUST (CVE-2013-4527 class): 3..=32 and the configured count",
    ),
    h(
        "hpet.timer",
        "timer[i].tn == i, timer config bits the guest cannot set",
    ),
    h(
        "hpet.config",
        "general configuration bits the guest cannot set",
    ),
    h("hpet.isr", "status bits of timers that do not exist"),
    // serial
    h(
        "serial.head",
        "MUST (CVE-2013-4530 class): FIFO cursor < 16",
    ),
    h("serial.num", "MUST (CVE-2013-4533 class): FIFO fill <= 16"),
    h(
        "serial.tsr_retry",
        "<= MAX_XMIT_RETRY, refused rather than clamped",
    ),
    h("serial.lsr", "TEMT consistent with tsr_retry"),
    h("serial.fcr_vmstate", "bits the guest's writes mask"),
    h("serial.ier", "bits the guest's writes mask"),
    h("serial.mcr", "bits the guest's writes mask"),
    h("serial.thr_ipending", "a flag"),
    h("serial.timeout_ipending", "a flag"),
    h("serial.poll_msl", "a flag (0, 1 or -1)"),
    // fw_cfg
    h(
        "fw_cfg.cur_entry",
        "MUST (CVE-2013-6399 class): an index into the entries",
    ),
    h(
        "fw_cfg.table_mr_size",
        "MUST (CVE-2014-0182 class): ACPI table region maximum",
    ),
    h("fw_cfg.linker_mr_size", "MUST: ACPI linker region maximum"),
    h("fw_cfg.rsdp_mr_size", "MUST: ACPI RSDP region maximum"),
    // globalstate
    h(
        "globalstate.size",
        "a writer sends strlen + 1; QEMU never reads it",
    ),
    h(
        "globalstate.runstate",
        "the name is NUL-terminated and a run-state name",
    ),
    h(
        "globalstate.has_vm_was_suspended",
        "a bool (QEMU 10.0 loads any byte into it)",
    ),
    h(
        "globalstate.vm_was_suspended",
        "a bool (QEMU 10.0 loads any byte into it)",
    ),
    h("hpet.rtc_irq_level", "a level is 0 or 1"),
    // stream-level rules of verify
    h(
        "stream.duplicate-section",
        "QEMU loads a section sent twice (the later wins); verify refuses the repeat \
         (docs/UNTRUSTED-INPUT.md §5)",
    ),
    h(
        "stream.instance-any",
        "instance id 0xffffffff: QEMU's find_se matches it to the first handler of that idstr \
         registered without an alias id (alias -1); verify refuses an instance the \
         destination does not have",
    ),
    h(
        "subsection.once",
        "QEMU loads a subsection its table knows again (the later wins) and in any order; \
         verify accepts each once, where the table and the description allow it",
    ),
    h(
        "command.live-only",
        "a COMMAND other than SWITCHOVER_START (return path, postcopy, COLO, packaged): QEMU \
         accepts some only in a live migration's state (PING after OPEN_RETURN_PATH); verify \
         refuses them all",
    ),
    h(
        "trailer.unlisted",
        "the VMDESCRIPTION trailer lists a section the stream does not carry; QEMU never \
         reads the trailer",
    ),
    h(
        "trailer.body",
        "the body does not match the trailer's description; QEMU never reads the trailer",
    ),
    h(
        "trailer.version",
        "the section version differs from the trailer's; QEMU never reads the trailer",
    ),
    h(
        "trailer.missing",
        "a section the trailer does not describe; QEMU never reads the trailer",
    ),
];

const fn h(id: &'static str, why: &'static str) -> Hardening {
    Hardening { id, why }
}

/// QEMU refusals of a mutant `verify` accepts that are explained (not a looseness of
/// `verify`): (substring of QEMU's stderr, explanation).
pub const EXPLAINED: &[(&str, &str)] = &[];

/// The rule a problem of `verify` names: `idstr.field` for a device rule (`verify` names the
/// section and the field), a `stream.*` / `trailer.*` id for the stream rules, else the whole
/// message (an unknown rule).
pub fn rule_of(message: &str) -> String {
    if message.contains("section occurs twice") {
        return "stream.duplicate-section".into();
    }
    if message.contains("hardening rule command.live-only") {
        return "command.live-only".into();
    }
    if message.contains("hardening rule subsection.once")
        || (message.contains("subsection ") && message.contains(" occurs twice"))
    {
        return "subsection.once".into();
    }
    if message.contains("instance id 0xffffffff") {
        return "stream.instance-any".into();
    }
    if message.contains("which the stream does not carry") {
        return "trailer.unlisted".into();
    }
    if message.contains("not in the stream's description") {
        return "trailer.missing".into();
    }
    if message.contains("but the description says") {
        return "trailer.version".into();
    }
    if message.contains("against the stream's description")
        || message.contains("the description makes the body")
    {
        return "trailer.body".into();
    }
    if let Some(sec) = between(message, "section '", "'")
        && let Some(field) = between(message, ", field ", ":")
    {
        // `channels[0].irq_disabled` -> `channels.irq_disabled`: one rule for every element.
        let mut path = String::new();
        let mut depth = 0;
        for ch in field.chars() {
            match ch {
                '[' => depth += 1,
                ']' => depth -= 1,
                c if depth == 0 => path.push(c),
                _ => {}
            }
        }
        return format!("{sec}.{path}");
    }
    message.into()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// One field (leaf) of a section body: its path, offset in the body and width.
#[derive(Debug, Clone)]
struct Leaf {
    path: String,
    offset: usize,
    size: usize,
}

/// One subsection inside a body: where its `05` marker is, its name, the offset of its
/// version word, and where it ends.
#[derive(Debug, Clone)]
struct Sub {
    start: usize,
    name_len_at: usize,
    name_at: usize,
    version_at: usize,
    version: u32,
    end: usize,
}

/// A modelled FULL section of a fixture, laid out from the fixture's description.
#[derive(Debug, Clone)]
struct Section {
    idstr: String,
    instance_id: u32,
    version: u32,
    offset: usize,
    body_offset: usize,
    body_end: usize,
    end: usize,
    leaves: Vec<Leaf>,
    subs: Vec<Sub>,
}

/// A fixture, read and laid out.
struct Prepared {
    fixture: Fixture,
    bytes: Vec<u8>,
    sections: Vec<Section>,
    /// Offsets between records where a COMMAND record may be inserted (after the
    /// CONFIGURATION record, before the EOF).
    boundaries: Vec<usize>,
}

/// Lays out the fields of a description object (`fields` + `subsections`) starting at `at`
/// (relative to the body); returns the offset after it.
fn lay_out(
    obj: &Value,
    prefix: &str,
    at: usize,
    leaves: &mut Vec<Leaf>,
    subs: &mut Vec<Sub>,
) -> usize {
    let mut at = at;
    for f in obj["fields"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or("?");
        let n = f.get("array_len").and_then(Value::as_u64).unwrap_or(1) as usize;
        let size = f["size"].as_u64().unwrap_or(0) as usize;
        for i in 0..n {
            let path = if n > 1 {
                format!("{prefix}{name}[{i}]")
            } else {
                format!("{prefix}{name}")
            };
            if let Some(s) = f.get("struct") {
                let end = lay_out(s, &format!("{path}."), at, leaves, subs);
                at = end;
            } else {
                leaves.push(Leaf {
                    path,
                    offset: at,
                    size,
                });
                at += size;
            }
        }
    }
    for s in obj
        .get("subsections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s["vmsd_name"].as_str().unwrap_or("?");
        let start = at;
        let name_at = start + 2;
        let version_at = name_at + name.len();
        let body = version_at + 4;
        let end = lay_out(s, &format!("{name}/"), body, leaves, subs);
        subs.push(Sub {
            start,
            name_len_at: start + 1,
            name_at,
            version_at,
            version: s.get("version").and_then(Value::as_u64).unwrap_or(0) as u32,
            end,
        });
        at = end;
    }
    at
}

fn prepare(fx: Fixture) -> Prepared {
    let bytes = fixture(fx.file);
    let desc_name = fx.file.replace(".vmstate", ".desc.json");
    let desc: Value = serde_json::from_slice(&std::fs::read(fixture_path(&desc_name)).unwrap())
        .expect("desc.json");
    let pc = Pc::new(PcConfig::default());
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    let mut sections = Vec::new();
    let mut boundaries = Vec::new();
    for l in Records::with_options(&bytes, FooterScan, options) {
        let l = l.unwrap_or_else(|e| panic!("{}: {e}", fx.file));
        match l.record {
            Record::Header { .. } | Record::Eof | Record::Trailer(_) => continue,
            Record::Configuration(_) => {
                boundaries.push(l.end);
                continue;
            }
            _ => {}
        }
        boundaries.push(l.end);
        let Record::Section(s) = l.record else {
            continue;
        };
        if !s.kind.has_full_header() || s.is_ram() || pc.slot(s.idstr, s.instance_id).is_none() {
            continue;
        }
        let idstr = String::from_utf8_lossy(s.idstr).into_owned();
        let Some(d) = desc["devices"].as_array().and_then(|ds| {
            ds.iter().find(|d| {
                d["name"].as_str() == Some(idstr.as_str())
                    && d["instance_id"].as_u64() == Some(s.instance_id.into())
            })
        }) else {
            continue;
        };
        let (mut leaves, mut subs) = (Vec::new(), Vec::new());
        let len = lay_out(d, "", 0, &mut leaves, &mut subs);
        assert_eq!(len, s.body.len(), "{}: {idstr} laid out", fx.file);
        let base = s.body_offset;
        for leaf in &mut leaves {
            leaf.offset += base;
        }
        for sub in &mut subs {
            sub.start += base;
            sub.name_len_at += base;
            sub.name_at += base;
            sub.version_at += base;
            sub.end += base;
        }
        sections.push(Section {
            idstr,
            instance_id: s.instance_id,
            version: s.version_id,
            offset: s.offset,
            body_offset: base,
            body_end: base + s.body.len(),
            end: l.end,
            leaves,
            subs,
        });
    }
    Prepared {
        fixture: fx,
        bytes,
        sections,
        boundaries,
    }
}

/// A mutant: what was done, and the bytes.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// The fixture it was made from.
    pub fixture: Fixture,
    /// The kind of mutation (the table's rows).
    pub kind: &'static str,
    /// What exactly (section, field, value).
    pub what: String,
    /// The stream.
    pub bytes: Vec<u8>,
}

/// Values at and around the boundaries of the device rules: small integers and the rule
/// constants of `devices/src/*.rs` (priority 7, ICW step 3, 0/1/2 flags, 14/16 FIFO, 20
/// reinjections, 24 IOAPIC pins, 32 HPET timers, 0x20/0x40 fw_cfg slots, 0x7f CMOS index,
/// 0x10000 PIT count), each ±1.
const BOUNDARIES: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 19, 20, 21, 23, 24, 25, 31, 32, 33, 0x3f,
    0x40, 0x41, 0x7f, 0x80, 0x81, 0xf8, 0xfe, 0xff, 0x100, 0x3fff, 0x4000, 0x4001, 0xfffe, 0xffff,
    0x1_0000, 0x1_0001, 0xff_ffff, 0x100_0000,
];

fn write_be(bytes: &mut [u8], at: usize, size: usize, v: u64) {
    let b = v.to_be_bytes();
    let size = size.min(8);
    bytes[at..at + size].copy_from_slice(&b[8 - size..]);
}

fn read_be(bytes: &[u8], at: usize, size: usize) -> u64 {
    bytes[at..at + size.min(8)]
        .iter()
        .fold(0, |v, b| (v << 8) | u64::from(*b))
}

fn field_value(rng: &mut Rng, orig: u64, size: usize) -> u64 {
    let bits = 8 * size.min(8) as u32;
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let v = match rng.below(10) {
        0..=4 => BOUNDARIES[rng.below(BOUNDARIES.len())],
        5 => orig.wrapping_add(1),
        6 => orig.wrapping_sub(1),
        7 => orig ^ (1 << rng.below(bits as usize)),
        8 => [max, max - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1][rng.below(4)],
        _ => orig.wrapping_add(BOUNDARIES[rng.below(BOUNDARIES.len())]),
    };
    v & max
}

const COMMAND_LENGTHS: &[u16] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 255, 256];

impl Prepared {
    fn mutate(&self, rng: &mut Rng) -> Mutant {
        let mut b = self.bytes.clone();
        let s = &self.sections[rng.below(self.sections.len())];
        let label = format!("{}[{}]", s.idstr, s.instance_id);
        let (kind, what) = match rng.below(21) {
            0..=10 => {
                // A field value: pick a field (a name, then one of its elements).
                let names: Vec<&str> = {
                    let mut v: Vec<&str> = s
                        .leaves
                        .iter()
                        .map(|l| l.path.split('[').next().unwrap_or(&l.path))
                        .collect();
                    v.dedup();
                    v
                };
                let name = names[rng.below(names.len())];
                let pick: Vec<&Leaf> = s
                    .leaves
                    .iter()
                    .filter(|l| l.path.split('[').next() == Some(name))
                    .collect();
                let leaf = pick[rng.below(pick.len())];
                if leaf.size == 0 {
                    return self.mutate(rng);
                }
                let orig = read_be(&b, leaf.offset, leaf.size);
                let v = field_value(rng, orig, leaf.size);
                write_be(&mut b, leaf.offset, leaf.size, v);
                (
                    "field value",
                    format!("{label} {} {orig:#x} -> {v:#x}", leaf.path),
                )
            }
            11 => {
                let v = match rng.below(6) {
                    0 => s.version.wrapping_sub(1),
                    1 => s.version + 1,
                    2 => 0,
                    3 => s.version + 2,
                    4 => 0xffff_ffff,
                    _ => 1,
                };
                write_be(&mut b, s.body_offset - 4, 4, v.into());
                ("section version", format!("{label} {} -> {v}", s.version))
            }
            12 => {
                let v = match rng.below(5) {
                    0 => s.instance_id + 1,
                    1 => s.instance_id.wrapping_sub(1),
                    2 => 2,
                    3 => 4,
                    _ => 0xffff_ffff,
                };
                write_be(&mut b, s.body_offset - 8, 4, v.into());
                ("instance id", format!("{label} -> {v}"))
            }
            13 | 14 if self.sections.iter().any(|s| !s.subs.is_empty()) => {
                // Among the sections that carry a subsection (few do).
                let with: Vec<&Section> = self
                    .sections
                    .iter()
                    .filter(|s| !s.subs.is_empty())
                    .collect();
                let s = with[rng.below(with.len())];
                let label = format!("{}[{}]", s.idstr, s.instance_id);
                let sub = &s.subs[rng.below(s.subs.len())];
                let name = String::from_utf8_lossy(&b[sub.name_at..sub.version_at]).into_owned();
                match rng.below(5) {
                    0 => {
                        b.drain(sub.start..sub.end);
                        ("subsection", format!("{label} drop {name}"))
                    }
                    1 => {
                        let v = [0, sub.version.wrapping_sub(1), sub.version + 1, 0xffff_ffff]
                            [rng.below(4)];
                        write_be(&mut b, sub.version_at, 4, v.into());
                        (
                            "subsection",
                            format!("{label} {name} version {} -> {v}", sub.version),
                        )
                    }
                    2 => {
                        let at = sub.name_at + rng.below(sub.version_at - sub.name_at);
                        b[at] ^= 0x01;
                        (
                            "subsection",
                            format!("{label} {name} name byte {} ^ 1", at - sub.name_at),
                        )
                    }
                    3 => {
                        let d = if rng.below(2) == 0 { 1 } else { 0xff };
                        b[sub.name_len_at] = b[sub.name_len_at].wrapping_add(d);
                        (
                            "subsection",
                            format!("{label} {name} name length {:+}", d as i8),
                        )
                    }
                    _ => {
                        let copy = b[sub.start..sub.end].to_vec();
                        b.splice(sub.end..sub.end, copy);
                        ("subsection", format!("{label} {name} sent twice"))
                    }
                }
            }
            13..=15 => {
                // Body length: cut or add bytes at the end of the body (before the footer).
                match rng.below(4) {
                    0 => {
                        let n = 1 + rng.below(4.min(s.body_end - s.body_offset));
                        b.drain(s.body_end - n..s.body_end);
                        ("length", format!("{label} body -{n}"))
                    }
                    1 => {
                        let n = 1 + rng.below(4);
                        let fill = vec![0u8; n];
                        b.splice(s.body_end..s.body_end, fill);
                        ("length", format!("{label} body +{n}"))
                    }
                    _ => {
                        // The idstr length byte (after 04 + be32 section id).
                        let at = s.offset + 5;
                        let d: u8 = if rng.below(2) == 0 { 1 } else { 0xff };
                        b[at] = b[at].wrapping_add(d);
                        ("length", format!("{label} idstr length {:+}", d as i8))
                    }
                }
            }
            16 => {
                let copy = b[s.offset..s.end].to_vec();
                b.splice(s.end..s.end, copy);
                ("section", format!("{label} sent twice"))
            }
            17 => {
                b.drain(s.offset..s.end);
                ("section", format!("{label} dropped"))
            }
            _ => {
                let at = self.boundaries[rng.below(self.boundaries.len())];
                let cmd = rng.below(14) as u16;
                let len = COMMAND_LENGTHS[rng.below(COMMAND_LENGTHS.len())];
                let mut rec = vec![0x08];
                rec.extend_from_slice(&cmd.to_be_bytes());
                rec.extend_from_slice(&len.to_be_bytes());
                rec.extend((0..len).map(|_| rng.below(256) as u8));
                b.splice(at..at, rec);
                ("COMMAND", format!("cmd {cmd} len {len} at byte {at}"))
            }
        };
        Mutant {
            fixture: self.fixture,
            kind,
            what,
            bytes: b,
        }
    }
}

/// The fixtures laid out once; mutant `i` of a seed is made on demand (a long run never holds
/// thousands of 2 MB streams).
pub struct Campaign {
    prepared: Vec<Prepared>,
    seed: u64,
}

impl Campaign {
    /// Reads and lays out [`FIXTURES`].
    pub fn new(seed: u64) -> Campaign {
        Campaign {
            prepared: FIXTURES.iter().map(|f| prepare(*f)).collect(),
            seed,
        }
    }

    /// Mutant `i`: fixtures in turn, each mutant from its own generator (seed and index).
    pub fn mutant(&self, i: usize) -> Mutant {
        let mut rng = Rng::new(
            self.seed
                .wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        self.prepared[i % self.prepared.len()].mutate(&mut rng)
    }
}

/// Makes `n` mutants from `seed`, spread evenly over [`FIXTURES`].
pub fn mutants(seed: u64, n: usize) -> Vec<Mutant> {
    let c = Campaign::new(seed);
    (0..n).map(|i| c.mutant(i)).collect()
}

/// The verdict on one mutant and one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Both load it.
    AgreeLoad,
    /// Both refuse it.
    AgreeRefuse,
    /// `verify` refuses, QEMU loads, every problem is a documented hardening rule (the rule
    /// ids).
    Hardening(Vec<&'static str>),
    /// `verify` refuses, QEMU loads, and a problem maps to no documented rule.
    Undocumented(String),
    /// QEMU refuses, `verify` accepts, and [`EXPLAINED`] explains it (the explanation).
    Explained(&'static str),
    /// QEMU refuses, `verify` accepts: `verify` is looser than QEMU (QEMU's message).
    Looser(String),
    /// The harness failed on this mutant (the panic message).
    HarnessError(String),
}

impl Class {
    /// Whether this is a disagreement (neither agreement nor a documented/explained case).
    pub fn is_disagreement(&self) -> bool {
        matches!(
            self,
            Class::Undocumented(_) | Class::Looser(_) | Class::HarnessError(_)
        )
    }

    /// The table column.
    pub fn column(&self) -> &'static str {
        match self {
            Class::AgreeLoad | Class::AgreeRefuse => "agree",
            Class::Hardening(_) => "documented hardening",
            Class::Explained(_) => "explained",
            Class::Undocumented(_) | Class::Looser(_) | Class::HarnessError(_) => "disagreement",
        }
    }
}

/// One result: the mutant's index, the build and the verdict.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Index into the mutant list.
    pub mutant: usize,
    /// The destination build.
    pub build: QemuBuild,
    /// The verdict.
    pub class: Class,
}

/// The first line of QEMU's stderr that says why the load failed.
fn qemu_reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .find(|l| !l.contains("load of migration failed") && !l.contains("warning:"))
        .or(lines.first())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// Classifies one mutant on one build (`None`: the build is not installed, outside CI).
pub fn judge(m: &Mutant, build: QemuBuild, path: &std::path::Path) -> Option<Class> {
    let args = qemu::fixture_machine(m.fixture.machine);
    let mut q = Qemu::incoming_on(build, path, &args)?;
    // A destination still loading after 60 s (a COMMAND that waits for a peer, e.g.
    // POSTCOPY_LISTEN) has not loaded the stream: that is a refusal.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.wait_loaded()))
        .unwrap_or_else(|_| LoadOutcome::Failed("did not finish loading in 60 s".into()));
    drop(q);
    let spec = DestSpec {
        machine: Some(m.fixture.machine.into()),
        qemu: Some(build),
        ..DestSpec::default()
    };
    let problems = match verify(&m.bytes, &spec, &mut |_| {}) {
        Ok(r) => r.problems.into_iter().map(|p| p.message).collect(),
        Err(e) => vec![e],
    };
    Some(match (outcome, problems.is_empty()) {
        (LoadOutcome::Completed, true) => Class::AgreeLoad,
        (LoadOutcome::Failed(_), false) => Class::AgreeRefuse,
        (LoadOutcome::Completed, false) => {
            let mut ids = Vec::new();
            for p in &problems {
                let rule = rule_of(p);
                match HARDENING.iter().find(|h| h.id == rule) {
                    Some(h) => ids.push(h.id),
                    None => return Some(Class::Undocumented(p.clone())),
                }
            }
            ids.dedup();
            Class::Hardening(ids)
        }
        (LoadOutcome::Failed(stderr), true) => {
            match EXPLAINED.iter().find(|(s, _)| stderr.contains(s)) {
                Some((_, why)) => Class::Explained(why),
                None => Class::Looser(qemu_reason(&stderr)),
            }
        }
    })
}

/// Runs the campaign: every mutant on every build that has its machine type, `workers` QEMU
/// loads at a time. Mutant files go to a scratch folder under the system temp dir.
///
/// Returns the mutants without their bytes (for [`table`]) and the outcomes.
pub fn run(campaign: &Campaign, n: usize, workers: usize) -> (Vec<Mutant>, Vec<Outcome>) {
    let mutants: Vec<Mutant> = (0..n)
        .map(|i| Mutant {
            bytes: Vec::new(),
            ..campaign.mutant(i)
        })
        .collect();
    let mutants = &mutants;
    let dir = std::env::temp_dir().join(format!("vmstate-differential-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jobs: Vec<(usize, QemuBuild)> = mutants
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.fixture.builds.iter().map(move |b| (i, *b)))
        .collect();
    let next = Mutex::new(0usize);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..workers.max(1) {
            let (next, out, jobs, dir) = (&next, &out, &jobs, &dir);
            scope.spawn(move || {
                let path: PathBuf = dir.join(format!("mutant-{w}.vmstate"));
                loop {
                    let j = {
                        let mut n = next.lock().unwrap();
                        let j = *n;
                        *n += 1;
                        j
                    };
                    let Some(&(i, build)) = jobs.get(j) else {
                        break;
                    };
                    let m = campaign.mutant(i);
                    std::fs::write(&path, &m.bytes).unwrap();
                    // A panic of the harness (QEMU misbehaving as a peer) is a result too,
                    // counted as a disagreement so it is looked at, not a lost campaign.
                    let judged = std::panic::catch_unwind(|| judge(&m, build, &path))
                        .unwrap_or_else(|e| {
                            let why = e
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Some(Class::HarnessError(why))
                        });
                    if let Some(class) = judged {
                        out.lock().unwrap().push(Outcome {
                            mutant: i,
                            build,
                            class,
                        });
                    }
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|o| (o.mutant, o.build.version()));
    (mutants.clone(), v)
}

/// The table of counts: rows = mutation kind (and a total), columns = agree / documented
/// hardening / explained / disagreement; then the hardening rules hit, then every
/// disagreement.
pub fn table(mutants: &[Mutant], outcomes: &[Outcome]) -> String {
    const COLS: &[&str] = &["agree", "documented hardening", "explained", "disagreement"];
    let mut rows: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut total = [0usize; 4];
    let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
    let mut both = [0usize; 2];
    for o in outcomes {
        let c = COLS.iter().position(|c| *c == o.class.column()).unwrap();
        rows.entry(mutants[o.mutant].kind).or_default()[c] += 1;
        total[c] += 1;
        match &o.class {
            Class::AgreeLoad => both[0] += 1,
            Class::AgreeRefuse => both[1] += 1,
            Class::Hardening(ids) => ids.iter().for_each(|id| *rules.entry(id).or_default() += 1),
            _ => {}
        }
    }
    let mut s = String::new();
    s.push_str("| mutation | agree | documented hardening | explained | disagreement |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for (k, r) in &rows {
        s.push_str(&format!(
            "| {k} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3]
        ));
    }
    s.push_str(&format!(
        "| **all ({} mutants, {} loads)** | {} | {} | {} | {} |\n",
        mutants.len(),
        outcomes.len(),
        total[0],
        total[1],
        total[2],
        total[3]
    ));
    s.push_str(&format!(
        "\nagree: {} both load, {} both refuse\n",
        both[0], both[1]
    ));
    s.push_str("\nhardening rules hit (loads):\n");
    for (id, n) in &rules {
        s.push_str(&format!("  {id}: {n}\n"));
    }
    for o in outcomes.iter().filter(|o| o.class.is_disagreement()) {
        let m = &mutants[o.mutant];
        s.push_str(&format!(
            "DISAGREEMENT {} on QEMU {}.{}: {} {}: {:?}\n",
            m.fixture.file,
            o.build.version().0,
            o.build.version().1,
            m.kind,
            m.what,
            o.class
        ));
    }
    s
}
