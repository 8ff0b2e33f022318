//! `vmstate verify`: decode every section and enforce every invariant, listing each problem.
//!
//! * Sections a typed model in `vmstate-devices` covers ([`Pc`]) are loaded into it: the load
//!   enforces the device's description, its `_EQUAL` fields against the destination
//!   configuration, and its invariants (untrusted-input §4). A second copy of a section is a
//!   problem (QEMU would load it twice).
//! * Every FULL section the stream's VMDESCRIPTION describes is also decoded with the
//!   description ([`crate::generic`]): the body must match it exactly, typed or not.
//! * RAM records are checked against the block list (by the codec's stream walker).
//! * Sections neither a model nor the description covers are named as not checked.
//!
//! A bad section does not stop the walk as long as its end can still be found: the typed
//! table, the description or, failing both, the footer scan tells where the body ends. Only an
//! error in the record structure itself (a RAM record, a header, a footer) ends the walk.

use crate::desc::Description;
use crate::generic::{self, DecodeError};
use crate::model::find_description;
use std::collections::HashSet;
use std::fmt;
use vmstate::body::{Mode, decode_body_mode};
use vmstate::ram::{RamContext, RamOptions, RamRecord};
use vmstate::stream::{BodyLength, FooterScan, Options, Record, Records, SectionInfo};
use vmstate::wire::section::SectionKind;
use vmstate::wire::{Reader, record};
use vmstate_devices::pc::{Pc, PcConfig};

/// One problem found, at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Absolute byte offset.
    pub offset: usize,
    /// Full diagnostic (offset, section, field, expected vs found).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// FULL sections loaded into a typed model (and also decoded with the description when
    /// the stream has one).
    pub typed: usize,
    /// FULL sections no typed model covers, checked against the description.
    pub generic: usize,
    /// RAM records read (block list, pages, EOS).
    pub ram_records: usize,
    /// Bytes walked.
    pub bytes: usize,
    /// Whether the stream carried a usable description.
    pub described: bool,
    /// Sections nobody could check (`idstr` instance).
    pub unchecked: Vec<String>,
    /// The problems, in stream order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The one-line summary printed on success.
    pub fn summary(&self) -> String {
        format!(
            "ok: {} sections checked with typed models, {} with the description only, {} RAM records, {} bytes",
            self.typed, self.generic, self.ram_records, self.bytes
        )
    }
}

fn label(idstr: &[u8], instance_id: u32) -> String {
    format!("'{}' instance {instance_id}", vmstate::Escaped(idstr))
}

/// Finds body ends (typed table, then description, then footer scan) and records the
/// description check of every FULL section on the way.
struct Lengths<'d> {
    desc: Option<&'d Description<'d>>,
    used: Vec<bool>,
    /// A destination with every optional device configured: used for its initial states.
    init: Pc,
    problems: Vec<Problem>,
    /// Whether the last FULL section had a description entry.
    described: bool,
}

impl Lengths<'_> {
    fn describe(&mut self, sec: &SectionInfo<'_>, rest: &[u8], base: usize) -> Option<usize> {
        let desc = self.desc?;
        let Some((i, dev)) = desc.device(sec.idstr, sec.instance_id) else {
            self.problems.push(Problem {
                offset: base,
                message: format!(
                    "at byte {base} (0x{base:x}), section {}: not in the stream's description",
                    label(sec.idstr, sec.instance_id)
                ),
            });
            return None;
        };
        self.used[i] = true;
        if let Some((_, v)) = &dev.vmsd
            && *v != sec.version_id
        {
            self.problems.push(Problem {
                offset: base,
                message: format!(
                    "at byte {base} (0x{base:x}), section {}: version {} but the description says {v}",
                    label(sec.idstr, sec.instance_id),
                    sec.version_id
                ),
            });
            return None;
        }
        self.described = true;
        match generic::decode_prefix(&dev.body, rest, base) {
            Ok((_, n)) => Some(n),
            Err(e) => {
                self.problems
                    .push(decode_problem(sec.idstr, sec.instance_id, &e));
                None
            }
        }
    }

    fn typed(&mut self, sec: &SectionInfo<'_>, rest: &[u8], base: usize) -> Option<usize> {
        let slot = self.init.slot(sec.idstr, sec.instance_id)?;
        let (vmsd, state) = self.init.state(slot);
        let mut scratch = state.to_vec();
        let mut r = Reader::new(rest, base);
        decode_body_mode(vmsd, sec.version_id, &mut r, &mut scratch, Mode::Structure).ok()?;
        Some(r.position())
    }
}

fn decode_problem(idstr: &[u8], instance_id: u32, e: &DecodeError) -> Problem {
    Problem {
        offset: e.offset,
        message: format!(
            "{e} (section {}, against the stream's description)",
            label(idstr, instance_id)
        ),
    }
}

impl BodyLength for Lengths<'_> {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> vmstate::Result<Option<usize>> {
        if sec.kind != SectionKind::Full {
            return FooterScan.body_len(sec, rest, base);
        }
        self.described = false;
        let by_desc = self.describe(sec, rest, base);
        let by_type = self.typed(sec, rest, base);
        if let (Some(d), Some(t)) = (by_desc, by_type)
            && d != t
        {
            let at = base + d.min(t);
            self.problems.push(Problem {
                offset: at,
                message: format!(
                    "at byte {at} (0x{at:x}), section {}: the description makes the body {d} bytes, the device's table {t}",
                    label(sec.idstr, sec.instance_id)
                ),
            });
        }
        match by_type.or(by_desc) {
            Some(n) => Ok(Some(n)),
            None => FooterScan.body_len(sec, rest, base),
        }
    }
}

/// Verifies `bytes`. `config` is the destination (its `serial` flag is turned on when the
/// stream carries an ISA `serial` section); `progress` is called with the offset reached.
pub fn verify(bytes: &[u8], config: PcConfig, progress: &mut dyn FnMut(usize)) -> Report {
    let mut report = Report::default();
    let desc = match find_description(bytes) {
        Ok(d) => d.map(|(_, d)| d),
        Err(e) => {
            let at = vmstate::wire::Trailer::locate(bytes).unwrap_or(bytes.len());
            report.problems.push(Problem {
                offset: at,
                message: format!("at byte {at} (0x{at:x}), VMDESCRIPTION trailer: {e}"),
            });
            None
        }
    };
    report.described = desc.is_some();
    let mut pc = Pc::new(config);
    let lengths = Lengths {
        desc: desc.as_ref(),
        used: vec![false; desc.as_ref().map_or(0, |d| d.devices.len())],
        init: Pc::new(PcConfig {
            serial: true,
            ..config
        }),
        problems: Vec::new(),
        described: false,
    };
    let options = Options {
        require_configuration: bytes.get(8) == Some(&record::CONFIGURATION),
        allow_commands: true,
        ..Options::default()
    };
    let mut records = Records::with_options(bytes, lengths, options);
    let mut ram = RamContext::new(RamOptions::default());
    let mut seen = HashSet::new();
    let mut unchecked = Vec::new();
    let mut complete = true;
    while let Some(next) = records.next() {
        let found = std::mem::take(&mut records.lengths().problems);
        report.problems.extend(found);
        let located = match next {
            Ok(l) => l,
            Err(e) => {
                report.problems.push(Problem {
                    offset: e.offset,
                    message: e.to_string(),
                });
                complete = false;
                break;
            }
        };
        // Only bytes before the record are done with: reading its RAM records below touches
        // the record again.
        progress(located.offset);
        report.bytes = located.end;
        let rec = match located.record {
            Record::Eof | Record::Trailer(_) => {
                progress(located.end);
                continue;
            }
            Record::Configuration(c) => {
                ram.options.ignore_shared = c
                    .capabilities
                    .is_some_and(|caps| caps.iter().any(|c| c == b"x-ignore-shared"));
                continue;
            }
            Record::Section(rec) => rec,
            _ => continue,
        };
        if rec.is_ram() {
            let mut r = Reader::new(rec.body, rec.body_offset);
            loop {
                match ram.read_record(&mut r) {
                    Ok(x) => {
                        report.ram_records += 1;
                        if x == RamRecord::Eos {
                            break;
                        }
                    }
                    Err(e) => {
                        let e = e.in_section(rec.context());
                        report.problems.push(Problem {
                            offset: e.offset,
                            message: e.to_string(),
                        });
                        break;
                    }
                }
            }
            continue;
        }
        let name = label(rec.idstr, rec.instance_id);
        if rec.kind != SectionKind::Full {
            if rec.kind.has_full_header() {
                unchecked.push(name);
            }
            continue;
        }
        if !seen.insert((rec.idstr, rec.instance_id)) {
            let at = rec.offset;
            report.problems.push(Problem {
                offset: at,
                message: format!(
                    "at byte {at} (0x{at:x}), section {name} (id {}): section occurs twice",
                    rec.section_id
                ),
            });
            continue;
        }
        if rec.idstr == b"serial" && rec.instance_id == 0 {
            pc.config.serial = true;
        }
        let described = records.lengths().described;
        match pc.load_section(&rec) {
            Ok(true) => report.typed += 1,
            Err(e) => {
                report.typed += 1;
                report.problems.push(Problem {
                    offset: e.offset,
                    message: e.to_string(),
                });
            }
            Ok(false) if described => report.generic += 1,
            Ok(false) => unchecked.push(name),
        }
    }
    let lengths = records.lengths();
    report.problems.append(&mut lengths.problems);
    if let Some(d) = desc.as_ref().filter(|_| complete) {
        for (dev, used) in d.devices.iter().zip(&lengths.used) {
            if !used {
                let at = bytes.len();
                report.problems.push(Problem {
                    offset: at,
                    message: format!(
                        "at byte {at} (0x{at:x}): the description lists '{}' instance {}, which the stream does not carry",
                        dev.name, dev.instance_id
                    ),
                });
            }
        }
    }
    report.unchecked = unchecked;
    report
}
