//! `vmstate verify`: decode every section and enforce every invariant, listing each problem.
//!
//! * The destination is a QEMU build and a machine type ([`DestSpec`]): the machine type the
//!   stream's CONFIGURATION record names, or `--machine` (which must then equal the stream's:
//!   QEMU refuses a stream of another machine type); the build is `--qemu`, by default the
//!   newest modelled build that has the machine type (QEMU 10.0 for every modelled one). Its
//!   [`PcConfig`] ([`vmstate_devices::machine::Destination::config`]) is what the typed models
//!   check against. A machine type no build defines, or older than the modelled ones, is a
//!   problem, and the typed models are then not applied (their configuration is not guessed).
//! * Every section of a device type a typed model in `vmstate-devices` covers ([`Pc`]) is
//!   loaded into it, every instance: the load enforces the device's description (the
//!   destination build's table), its `_EQUAL` fields against the destination configuration,
//!   and its invariants (docs/UNTRUSTED-INPUT.md §4). An instance the destination does not have (a
//!   fifth ISA serial port, a second hpet, more serial ports than `--serial-ports`) is a
//!   problem, as it is for QEMU. A second copy of a section is a problem (QEMU would load it
//!   twice).
//! * Every FULL section the stream's VMDESCRIPTION describes is also decoded with the
//!   description ([`crate::generic`]): the body must match it exactly, typed or not.
//! * RAM records are checked against the block list (by the codec's stream walker).
//! * Sections neither a model nor the description covers are named as not checked.
//!
//! A bad section does not stop the walk as long as its end can still be found: the typed
//! table, the description or, failing both, the footer scan tells where the body ends. Only an
//! error in the record structure itself (a RAM record, a header, a footer) ends the walk.

use crate::Stream;
use crate::desc::Description;
use crate::exit::Failure;
use crate::generic::PcCheck;
use crate::generic::{self, DecodeError};
use crate::model::find_description;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use vmstate::SectionHead;
use vmstate::body::{Mode, decode_body_mode};
use vmstate::ram::{RamOptions, RamRecord};
use vmstate::stream::{
    BodyLength, FooterScan, Next, Options, Record, Records, SectionInfo, probe_section_footers,
};
use vmstate::wire::command::CommandId;
use vmstate::wire::section::SectionKind;
use vmstate::wire::{Reader, record};
use vmstate_devices::machine::{Destination, MachineType, QemuBuild};
use vmstate_devices::pc::{MAX_ISA_SERIAL, Pc, PcConfig, Route};

/// How the destination is chosen: the `--machine`, `--qemu`, `--hpet-timers` and
/// `--serial-ports` options shared by `verify`, `rewrite` and `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestSpec {
    /// `--machine TYPE`: the destination's machine type (`pc-i440fx-X.Y`, `pc-q35-X.Y`, `pc`,
    /// `q35`); default: the stream's.
    pub machine: Option<String>,
    /// `--qemu 7.2|10.0`: the destination build; default: the newest modelled build that has
    /// the machine type.
    pub qemu: Option<QemuBuild>,
    /// `--hpet-timers N`: the HPET `timers` property; default: the machine type's (3).
    pub hpet_timers: Option<u8>,
    /// `--serial-ports N`: ISA serial ports on the destination (`-serial`); default: as many
    /// as the stream carries.
    pub serial_ports: Option<u8>,
}

/// A destination resolved against a stream ([`DestSpec::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The typed models' configuration, or `None` when the machine type is unknown (then the
    /// models are not applied). `serial_ports` is `--serial-ports` or 0 (see
    /// [`Resolved::serial_from_stream`]).
    pub config: Option<PcConfig>,
    /// Whether the serial port count is to be taken from the stream (no `--serial-ports`).
    pub serial_from_stream: bool,
    /// Why QEMU would refuse the stream at its CONFIGURATION record, or why the destination is
    /// unknown (no offset; the caller places it).
    pub problem: Option<String>,
}

/// The machine type a stream without CONFIGURATION record is checked against (with the build
/// `--qemu` names, QEMU 10.0 by default) unless `--machine` is given: the `pc` of the first
/// streams this tool was built on.
pub const DEFAULT_MACHINE: MachineType = MachineType::I440FX_7_2;

impl DestSpec {
    /// The destination `--machine` / `--qemu` name on their own, if `--machine` is given; an
    /// error (a usage error) for a machine type the build does not have or that is not
    /// modelled, or a serial port count above 4.
    pub fn explicit(&self) -> Result<Option<Destination>, String> {
        if let Some(n) = self.serial_ports
            && n > MAX_ISA_SERIAL
        {
            return Err(format!(
                "--serial-ports {n}: a PC has at most {MAX_ISA_SERIAL} ISA serial ports"
            ));
        }
        let Some(name) = &self.machine else {
            return Ok(None);
        };
        Destination::parse(name.as_bytes(), self.qemu)
            .map(Some)
            .map_err(|e| format!("--machine {name}: {e}"))
    }

    /// Resolves the destination for a stream whose CONFIGURATION names `stream_machine`
    /// (`None`: no CONFIGURATION record). Errors are the usage errors of
    /// [`DestSpec::explicit`]; what QEMU would refuse is [`Resolved::problem`].
    ///
    /// The stream's name must equal the destination's machine type exactly. QEMU's
    /// `configuration_post_load` compares only as many bytes as the stream sent (`strncmp` with
    /// the received length), so it would also accept a truncated name that is a prefix of its
    /// own; no QEMU writes one (the record carries the full class name, never an alias), and
    /// this check refuses it.
    pub fn resolve(&self, stream_machine: Option<&[u8]>) -> Result<Resolved, String> {
        let explicit = self.explicit()?;
        let mut problem = None;
        let dest = match (explicit, stream_machine) {
            (Some(d), Some(name)) => {
                if name != d.machine.to_string().as_bytes() {
                    let name = vmstate::Escaped(name);
                    // QEMU's configuration_post_load (7.2 and 10.0) fails the load with this.
                    problem = Some(format!(
                        "stream machine type {name}, destination {}: QEMU refuses the stream \
                         (\"Machine type received is '{name}' and local is '{}'\")",
                        d.machine, d.machine
                    ));
                }
                Some(d)
            }
            (Some(d), None) => Some(d),
            (None, Some(name)) => {
                match MachineType::parse(name).and_then(|m| Destination::for_machine(m, self.qemu))
                {
                    Ok(d) => Some(d),
                    Err(e) => {
                        problem = Some(format!(
                            "stream machine type {}: {e}; the typed device models are not \
                             applied (give --machine to check against a modelled machine type)",
                            vmstate::Escaped(name)
                        ));
                        None
                    }
                }
            }
            (None, None) => Some(
                Destination::for_machine(DEFAULT_MACHINE, self.qemu)
                    .map_err(|e| format!("--qemu: {e}"))?,
            ),
        };
        let config = dest.map(|d| {
            let mut c = d.config();
            if let Some(n) = self.hpet_timers {
                c.hpet.num_timers = n;
            }
            c.serial_ports = self.serial_ports.unwrap_or(0);
            c
        });
        Ok(Resolved {
            config,
            serial_from_stream: self.serial_ports.is_none(),
            problem,
        })
    }
}

impl DestSpec {
    /// Applies `rewrite --set` edits (`IDSTR[INSTANCE].FIELD=VALUE`, [`Stream::set`]) to
    /// `stream`, each checked by the typed models of the destination this resolves to for the
    /// stream ([`PcCheck`]); `name` names the input in the error. Edits are checked against a
    /// known destination only (never a guessed one): an unknown machine type is invalid input,
    /// a bad edit a usage error. Shared by `rewrite --set` and `proxy --set`.
    pub fn apply_edits(
        &self,
        stream: &mut Stream<'_>,
        edits: &[String],
        name: &str,
    ) -> Result<(), Failure> {
        let machine = stream.configuration.as_ref().map(|c| c.machine);
        let resolved = self.resolve(machine).map_err(Failure::Usage)?;
        let Some(mut config) = resolved.config else {
            let why = resolved.problem.unwrap_or_default();
            return Err(Failure::Invalid(format!("{name}: {why}")));
        };
        if resolved.serial_from_stream {
            config.serial_ports = MAX_ISA_SERIAL;
        }
        let check = PcCheck(Pc::new(config));
        for s in edits {
            stream
                .set(s, &check)
                .map_err(|e| Failure::Usage(format!("--set {e}")))?;
        }
        Ok(())
    }
}

/// The machine type a stream's CONFIGURATION record names, if it has one (at byte 8).
pub fn stream_machine(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.get(8) != Some(&record::CONFIGURATION) {
        return None;
    }
    let mut r = Reader::new(&bytes[8..], 8);
    vmstate::wire::Configuration::read(&mut r)
        .ok()
        .map(|c| c.machine)
}

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

/// What measures a FULL body: the description (checking it on the way) and the typed table.
struct Checks<'d> {
    desc: Option<&'d Description<'d>>,
    used: Vec<bool>,
    /// A destination with every optional device configured: used for its initial states.
    init: Pc,
}

impl Checks<'_> {
    /// Decodes the body with its description entry (the check of every described section);
    /// its length, or `None` (with the problem) when there is no entry or it does not match.
    /// Sets `described` when the section has an entry of its version.
    fn describe(
        &mut self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
        problems: &mut Vec<Problem>,
        described: &mut bool,
    ) -> Option<usize> {
        let desc = self.desc?;
        let base = head.body_offset();
        let Some((i, dev)) = desc.device(head.idstr, head.instance_id) else {
            problems.push(Problem {
                offset: base,
                message: format!(
                    "at byte {base} (0x{base:x}), section {}: not in the stream's description",
                    label(head.idstr, head.instance_id)
                ),
            });
            return None;
        };
        self.used[i] = true;
        if let Some((_, v)) = &dev.vmsd
            && *v != head.version_id
        {
            problems.push(Problem {
                offset: base,
                message: format!(
                    "at byte {base} (0x{base:x}), section {}: version {} but the description says {v}",
                    label(head.idstr, head.instance_id),
                    head.version_id
                ),
            });
            return None;
        }
        *described = true;
        match generic::decode_prefix(&dev.body, rest, base) {
            Ok((_, n)) => Some(n),
            Err(e) => {
                problems.push(decode_problem(head.idstr, head.instance_id, &e));
                None
            }
        }
    }

    /// The body's length by QEMU 10.0's table of its device type, if modelled.
    fn typed(&mut self, head: &SectionHead<&[u8]>, rest: &[u8]) -> Option<usize> {
        let slot = self.init.slot(head.idstr, head.instance_id)?;
        let (vmsd, state) = self.init.state(slot);
        let mut scratch = state.to_vec();
        let mut r = Reader::new(rest, head.body_offset());
        decode_body_mode(vmsd, head.version_id, &mut r, &mut scratch, Mode::Structure).ok()?;
        Some(r.position())
    }
}

/// Where `--schema` stopped, as a problem.
fn schema_problem(stop: &crate::schema::Stopped) -> Problem {
    Problem {
        offset: stop.offset,
        message: stop.to_string(),
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

/// Where a body no table measures ends: the footer scan, where the stream has footers;
/// without, such a body cannot be measured.
struct Scan {
    footers: bool,
}

impl BodyLength for Scan {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> vmstate::Result<Option<usize>> {
        if self.footers {
            FooterScan.body_len(sec, rest, base)
        } else {
            Ok(None)
        }
    }
}

/// A record the walk could not read: the problem that ends it.
pub(crate) fn walk_problem(e: &vmstate::Error) -> Problem {
    let mut message = e.to_string();
    if let vmstate::ErrorKind::MissingFooter { found: 0x05 } = e.kind {
        // QEMU loads any subsection the table knows, again and in any order.
        message.push_str(
            " (a subsection after the body's end: one sent twice or not allowed \
             here; hardening rule subsection.once)",
        );
    }
    Problem {
        offset: e.offset,
        message,
    }
}

/// Verifies `bytes` against the destination `dest` names (module docs); `progress` is called
/// with the offset reached. The error is a usage error of `dest` ([`DestSpec::explicit`]).
pub fn verify(
    bytes: &[u8],
    dest: &DestSpec,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, String> {
    verify_walk(bytes, None, 0, dest, progress)
}

/// [`verify`] of a stream at file offset `file_offset` of its file
/// ([`crate::input::Input::stream_start`]; mapped-ram headers hold file offsets).
pub fn verify_at(
    bytes: &[u8],
    file_offset: u64,
    dest: &DestSpec,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, String> {
    verify_walk(bytes, None, file_offset, dest, progress)
}

/// [`verify`] of a view of a stream whose bytes `skip` (from the end of the CONFIGURATION
/// record, or of the header without one, to the start of the held final phase) were walked
/// and checked by another reader and are not in `bytes` (the validating proxy,
/// [`crate::proxy`]): the walk continues past them ([`Records::resume_at`]), so every offset
/// reported is the live stream's.
pub fn verify_resumed(
    bytes: &[u8],
    skip: Option<Range<usize>>,
    dest: &DestSpec,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, String> {
    verify_walk(bytes, skip, 0, dest, progress)
}

fn verify_walk(
    bytes: &[u8],
    skip: Option<Range<usize>>,
    file_offset: u64,
    dest: &DestSpec,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, String> {
    let resolved = dest.resolve(stream_machine(bytes))?;
    let mut report = Report::default();
    if let Some(p) = &resolved.problem {
        report.problems.push(Problem {
            offset: 8,
            message: format!("at byte 8 (0x8), CONFIGURATION: {p}"),
        });
    }
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
    let mut pc = resolved.config.map(|mut c| {
        if resolved.serial_from_stream {
            // Whatever ports the stream carries (up to the PC's four) are the destination's;
            // each is checked by the serial model.
            c.serial_ports = MAX_ISA_SERIAL;
        }
        Pc::new(c)
    });
    let mut checks = Checks {
        desc: desc.as_ref(),
        used: vec![false; desc.as_ref().map_or(0, |d| d.devices.len())],
        // Measures bodies only: QEMU 10.0's tables read every body 7.2's read.
        init: Pc::new(PcConfig {
            serial_ports: MAX_ISA_SERIAL,
            ..Destination::new(MachineType::I440FX_10_0, QemuBuild::V10_0)
                .map_err(|e| e.to_string())?
                .config()
        }),
    };
    let footers = probe_section_footers(bytes);
    // The destination build's loader rules for RAM records and COMMAND records.
    let build = resolved.config.map(|c| c.destination.build);
    let version = build.map(|b| {
        let (major, minor) = b.version();
        (u16::from(major), u16::from(minor))
    });
    let options = Options {
        ram: RamOptions {
            file_offset,
            ..version.map_or(RamOptions::default(), |(major, minor)| {
                RamOptions::for_qemu(major, minor)
            })
        },
        section_footers: footers,
        ..Options::for_stream(bytes)
    };
    let mut records = Records::with_options(bytes, Scan { footers }, options);
    let mut seen = HashSet::new();
    let mut unchecked = Vec::new();
    let mut complete = true;
    loop {
        if let Some(skip) = skip.as_ref().filter(|s| records.offset() == s.start)
            && let Err(e) = records.resume_at(skip.end)
        {
            report.problems.push(walk_problem(&e));
            complete = false;
            break;
        }
        let Some(next) = records.next_head() else {
            break;
        };
        let head = match next {
            Ok(Next::Section(head)) => head,
            Ok(Next::Record(located)) => {
                progress(located.offset);
                report.bytes = located.end;
                match located.record {
                    Record::Eof | Record::Trailer(_) => progress(located.end),
                    Record::Command(c) => {
                        if let Some(p) = command_problem(&c, located.offset, version) {
                            report.problems.push(p);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            Err(e) => {
                report.problems.push(walk_problem(&e));
                complete = false;
                break;
            }
        };
        let rest = records.body_rest(&head);
        // Each body is read once to find its end: RAM records checked (by the walk's RAM
        // parser, which knows the block list and x-ignore-shared), a FULL body decoded with its
        // description, and the typed table only where that does not settle it.
        let mut problems = Vec::new();
        let mut described = false;
        let mut loaded = None;
        let measured = if head.is_ram() {
            let mut r = Reader::new(rest, head.body_offset());
            let ram = records.ram_mut();
            let mut n = 0;
            loop {
                match ram.read_record(&mut r) {
                    Ok(x) => {
                        n += 1;
                        if x == RamRecord::Eos {
                            break Ok(r.position());
                        }
                    }
                    Err(e) => break Err(e.in_section(head.context())),
                }
            }
            .inspect(|_| report.ram_records += n)
        } else if head.kind == SectionKind::Full {
            let by_desc = checks.describe(&head, rest, &mut problems, &mut described);
            // A body the destination's model loads at the description's length needs no
            // second measure: load it now, and keep the result.
            if let (Some(d), Some(pc)) = (by_desc, pc.as_mut())
                && !seen.contains(&(head.idstr, head.instance_id))
                && matches!(pc.route(head.idstr, head.instance_id), Route::Model(_))
            {
                let rec = head.record(rest.get(..d).unwrap_or_default());
                loaded = Some((d, pc.load_section(&rec)));
            }
            let by_type = match &loaded {
                Some((d, Ok(true))) => Some(*d),
                _ => checks.typed(&head, rest),
            };
            if let (Some(d), Some(t)) = (by_desc, by_type)
                && d != t
            {
                let at = head.body_offset() + d.min(t);
                problems.push(Problem {
                    offset: at,
                    message: format!(
                        "at byte {at} (0x{at:x}), section {}: the description makes the body {d} bytes, the device's table {t}",
                        label(head.idstr, head.instance_id)
                    ),
                });
            }
            match (by_type.or(by_desc), crate::schema::installed()) {
                (Some(n), _) => Ok(n),
                // `--schema` (crate::schema): where nothing else measures the body.
                (None, Some(schema)) if !footers && !report.described => {
                    match schema.measure(&head, rest) {
                        Ok((_, n)) => Ok(n),
                        Err(stop) => {
                            report.problems.push(schema_problem(&stop));
                            complete = false;
                            break;
                        }
                    }
                }
                (None, _) => records.measure(&head),
            }
        } else {
            records.measure(&head)
        };
        report.problems.append(&mut problems);
        let located = match measured.and_then(|n| records.commit(&head, n)) {
            Ok(l) => l,
            Err(e) => {
                report.problems.push(walk_problem(&e));
                complete = false;
                break;
            }
        };
        // Only bytes before the record are done with.
        progress(located.offset);
        report.bytes = located.end;
        let Record::Section(rec) = located.record else {
            continue;
        };
        if rec.is_ram() {
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
        let Some(pc) = pc.as_mut() else {
            if described {
                report.generic += 1;
            } else {
                unchecked.push(name);
            }
            continue;
        };
        if pc.route(rec.idstr, rec.instance_id) == Route::Unexpected {
            let at = rec.offset;
            let c = pc.config;
            let idstr = vmstate::Escaped(rec.idstr);
            let ports = if resolved.serial_from_stream {
                String::new()
            } else {
                format!(", ISA serial ports: {}", c.serial_ports)
            };
            // QEMU's find_se also matches instance id 0xffffffff to a handler registered
            // without an alias id (alias -1, most devices): QEMU may load it into the first
            // instance. Refusing it is a hardening rule (docs/DIFFERENTIAL.md).
            let qemu = if rec.instance_id == u32::MAX {
                "instance id 0xffffffff: QEMU may load it into the first instance (its alias id \
                 -1 matches), refused (hardening rule stream.instance-any)"
                    .to_string()
            } else {
                format!(
                    "QEMU refuses the stream (\"Unknown savevm section or instance '{idstr}' {}\")",
                    rec.instance_id
                )
            };
            report.problems.push(Problem {
                offset: at,
                message: format!(
                    "at byte {at} (0x{at:x}), section {name} (id {}): the destination ({}{ports}) \
                     has no such instance; {qemu}",
                    rec.section_id, c.destination
                ),
            });
            report.typed += 1;
            continue;
        }
        // The load of the description's length, if that is the body.
        let result = match loaded {
            Some((d, r)) if d == rec.body.len() => r,
            _ => pc.load_section(&rec),
        };
        match result {
            Ok(true) => report.typed += 1,
            Err(e) => {
                report.typed += 1;
                let mut message = e.to_string();
                if let vmstate::ErrorKind::UnknownSubsection { .. } = e.kind {
                    // A subsection only a newer build sends (i8259/ltim on QEMU 7.2).
                    message.push_str(&format!(
                        " (the destination, {}, does not know it: QEMU refuses the stream)",
                        pc.config.destination
                    ));
                }
                report.problems.push(Problem {
                    offset: e.offset,
                    message,
                });
            }
            Ok(false) if described => report.generic += 1,
            Ok(false) => unchecked.push(name),
        }
    }
    if let Some(d) = desc.as_ref().filter(|_| complete) {
        for (dev, used) in d.devices.iter().zip(&checks.used) {
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
    Ok(report)
}

/// Why the destination refuses a COMMAND record at `at`, if it does.
pub(crate) fn command_problem(
    c: &vmstate::wire::Command<'_>,
    at: usize,
    version: Option<(u16, u16)>,
) -> Option<Problem> {
    if let Some((major, minor)) = version
        && !c.id.known_by(major, minor)
    {
        return Some(Problem {
            offset: at,
            message: format!(
                "at byte {at} (0x{at:x}): COMMAND {} ({}) is unknown to the \
                 destination (QEMU {major}.{minor} refuses it: \"MIG_CMD 0x{:x} \
                 unknown\")",
                c.id.name(),
                c.id.number(),
                c.id.number()
            ),
        });
    }
    // Every other command belongs to a live migration (return path, postcopy, COLO, packaged
    // streams): QEMU refuses it unless the destination is in the state it needs (PING without
    // a return path, POSTCOPY_RUN before LISTEN, ...), which a stream alone cannot show.
    (c.id != CommandId::SwitchoverStart).then(|| Problem {
        offset: at,
        message: format!(
            "at byte {at} (0x{at:x}): COMMAND {} ({}) needs a live migration's \
             destination state (QEMU refuses it in a plain load); refused \
             (hardening rule command.live-only)",
            c.id.name(),
            c.id.number()
        ),
    })
}
