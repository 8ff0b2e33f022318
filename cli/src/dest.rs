//! Destinations for `vmstate check`: what a destination QEMU will load, and the verdict for a
//! stream against it — the verdict the real destination gives.
//!
//! A [`Destination`] is built from what a user has of the destination:
//!
//! * a build's `-dump-vmstate` JSON for a machine type (the dump names the machine type in
//!   `vmschkmachine`): every QOM device type with its vmsd name, versions and subsections;
//! * a stream that build wrote (v3 or v4): the machine type of its CONFIGURATION record, the
//!   sections, versions and subsections it contains, the vendor minors it used;
//! * or both (their union; the machine types must agree).
//!
//! A dump lists device *types* only. Sections registered without a QOM device class (`ram`,
//! `timer`, `cpu`, `apic`, `PCIBUS`, `globalstate`, …) are never in it, yet every pc/q35 machine
//! has them; for those, [`BUILDS`] holds the facts of the QEMU builds we know (versions and
//! top-level subsections, read from each build's source), and the build is inferred from the
//! dump or given with `--qemu`. A test proves the table covers every section of every real
//! fixture that its build's dump lacks.
//!
//! The rules of [`check`], each the behaviour of QEMU's loader (`migration/savevm.c`,
//! `migration/vmstate.c`):
//!
//! * **machine type**: with a CONFIGURATION record the received machine type must equal the
//!   destination's (`Machine type received is '…' and local is '…'`); a destination machine
//!   that expects the record refuses a stream without one (`Configuration section missing`);
//! * **capability**: the validated migration capabilities (`x-ignore-shared`, `mapped-ram`)
//!   must be set on both sides or on neither;
//! * **device**: every section's vmsd name must be known to the destination (`Unknown savevm
//!   section or instance`);
//! * **version**: its version must lie in the destination's `minimum_version_id..=version_id`;
//! * **subsection**: every subsection it carries must be known (`subsection … not found`);
//! * **command**: every COMMAND record must be one the destination build knows
//!   (`SWITCHOVER_START` is new in QEMU 10.0);
//! * v4 vendor minors and the protocol, as [`vmstate::v4::caps`] decides them.
//!
//! What a destination cannot tell from a dump is not guessed: the number of instances of each
//! device (that is the destination's command line) is not checked.

use crate::exit::Failure;
use crate::input::{Expect, Input};
use crate::v4tools::{HostCaps, stream_version, upgrade_v3_spooled_at};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use vmstate::v4::caps::{Incompatibility, Report, SectionRequirement};
use vmstate::v4::wire::{Record4, Records4};
use vmstate::wire::command::CommandId;
use vmstate::wire::{Configuration, Reader};
use vmstate_devices::machine::{MachineType, QemuBuild};

/// The `format` value of a destination file written by `vmstate caps`.
pub const FORMAT: &str = "vmstate-destination/1";

/// One section a destination can load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionCaps {
    /// The vmsd name (the idstr without a qdev path: `mc146818rtc`, `ide`).
    pub name: String,
    /// Oldest version accepted (`minimum_version_id`).
    pub min_version: u32,
    /// Newest version accepted (`version_id`).
    pub max_version: u32,
    /// Highest vendor minor accepted per vendor level (v4; index 0 = level 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_minor: Vec<u16>,
    /// Full names of the top-level subsections it can load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsections: Vec<String>,
}

/// What a destination QEMU will load (written by `vmstate caps`, read by `vmstate check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Always [`FORMAT`].
    pub format: String,
    /// The destination's machine type (`pc-i440fx-7.2`), if known.
    pub machine: Option<String>,
    /// The destination QEMU build (`7.2`, `10.0`), if known.
    pub qemu: Option<String>,
    /// Migration capabilities the destination validates and will have set.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Savevm protocol versions accepted (3, and 4 through vmstate).
    pub protocols: Vec<u32>,
    /// The destination's v4 vendor chain, level 1 first.
    #[serde(default)]
    pub vendors: Vec<String>,
    /// COMMAND record numbers the destination's loader knows.
    pub commands: Vec<u16>,
    /// Sections by vmsd name.
    pub sections: Vec<SectionCaps>,
    /// Where each part came from (`dump pc-i440fx-7.2`, `stream FILE`, `QEMU 7.2 facts`).
    #[serde(default)]
    pub from: Vec<String>,
}

/// A fact of a QEMU build about a section that its `-dump-vmstate` does not show.
#[derive(Debug, Clone, Copy)]
pub struct SectionFact {
    /// vmsd name.
    pub name: &'static str,
    /// `minimum_version_id`.
    pub min_version: u32,
    /// `version_id`.
    pub max_version: u32,
    /// Top-level subsection names.
    pub subsections: &'static [&'static str],
}

/// The facts of one QEMU build.
#[derive(Debug, Clone, Copy)]
pub struct BuildFacts {
    /// The build.
    pub build: QemuBuild,
    /// Sections every pc/q35 machine of that build has that are not in its dump.
    pub not_in_dump: &'static [SectionFact],
}

const fn fact(
    name: &'static str,
    min_version: u32,
    max_version: u32,
    subsections: &'static [&'static str],
) -> SectionFact {
    SectionFact {
        name,
        min_version,
        max_version,
        subsections,
    }
}

/// `cpu` (target/i386/machine.c `vmstate_x86_cpu`) subsections common to 7.2 and 10.0.
macro_rules! x86_cpu_subsections {
    ($($extra:literal),* $(,)?) => {
        &[
            "cpu/exception_info", "cpu/async_pf_msr", "cpu/async_pf_int_msr",
            "cpu/async_pv_eoi_msr", "cpu/steal_time_msr", "cpu/poll_control_msr",
            "cpu/fpop_ip_dp", "cpu/msr_tsc_adjust", "cpu/msr_tscdeadline",
            "cpu/msr_ia32_misc_enable", "cpu/msr_ia32_feature_control",
            "cpu/msr_architectural_pmu", "cpu/mpx", "cpu/msr_hyperv_hypercall",
            "cpu/msr_hyperv_vapic", "cpu/msr_hyperv_time", "cpu/msr_hyperv_crash",
            "cpu/msr_hyperv_runtime", "cpu/msr_hyperv_synic", "cpu/msr_hyperv_stimer",
            "cpu/msr_hyperv_reenlightenment", "cpu/avx512", "cpu/xss", "cpu/umwait",
            "cpu/tsc_khz", "cpu/msr_smi_count", "cpu/pkru", "cpu/pkrs", "cpu/spec_ctrl",
            "cpu/amd_tsc_scale_msr", "cpu/mcg_ext_ctl", "cpu/intel_pt", "cpu/virt_ssbd",
            "cpu/svn_npt", "cpu/svm_guest", "cpu/efer32", "cpu/nested_state",
            "cpu/msr_tsx_ctrl", "cpu/intel_sgx", "vmstate_pdptrs", "cpu/msr_xfd",
            "cpu/arch_lbr", "cpu/triple_fault", $($extra),*
        ]
    };
}

/// The sections both builds register without a QOM device class, with the same versions and
/// subsections, plus the build's own.
macro_rules! not_in_dump {
    ($($own:expr),* $(,)?) => {
        [
            fact("ram", 4, 4, &[]),
            fact("timer", 1, 2, &["timer/icount"]),
            fact(
                "cpu_common",
                1,
                1,
                &["cpu_common/exception_index", "cpu_common/crash_occurred"],
            ),
            fact("apic", 3, 3, &["apic_sipi"]),
            fact("PCIBUS", 1, 1, &[]),
            fact("i2c_bus", 1, 1, &[]),
            fact("acpi_build", 1, 1, &[]),
            fact("globalstate", 1, 1, &[]),
            $($own),*
        ]
    };
}

/// The QEMU builds whose facts we know, oldest first. Sources: each build's
/// `migration/ram.c` (`ram`, version 4 only), `system/cpu-timers.c` (`timer`),
/// `hw/core/cpu-*.c` (`cpu_common`), `target/i386/machine.c` (`cpu`),
/// `hw/intc/apic_common.c` (`apic`), `hw/pci/pci.c` (`PCIBUS`), `hw/i2c/core.c` (`i2c_bus`),
/// `hw/i386/acpi-build.c` (`acpi_build`), `migration/global_state.c` (`globalstate`), and in
/// 7.2 `hw/ide/pci.c` (`ide`, whose device class had no vmsd then). Checked against every
/// fixture of both builds by `host-tests/tests/check_matrix.rs`.
pub const BUILDS: &[BuildFacts] = &[
    BuildFacts {
        build: QemuBuild::V7_2,
        not_in_dump: &not_in_dump!(
            fact("cpu", 11, 12, x86_cpu_subsections!("cpu/intel_amx_xtile")),
            // The PIIX IDE device class had no vmsd in 7.2 (10.0's dump lists it).
            fact("ide", 0, 3, &[]),
        ),
    },
    BuildFacts {
        build: QemuBuild::V10_0,
        not_in_dump: &not_in_dump!(fact(
            "cpu",
            11,
            12,
            x86_cpu_subsections!(
                "cpu/xen_vcpu",
                "cpu/msr_hwcr",
                "cpu/fred",
                "vmstate_amx_xtile"
            ),
        )),
    },
];

impl BuildFacts {
    /// `7.2`, `10.0`.
    pub fn version(&self) -> String {
        let (major, minor) = self.build.version();
        format!("{major}.{minor}")
    }
}

/// The facts of build `version` (`7.2`, `10.0`).
pub fn build(version: &str) -> Option<&'static BuildFacts> {
    let b = QemuBuild::parse(version)?;
    BUILDS.iter().find(|f| f.build == b)
}

fn known_builds() -> String {
    BUILDS
        .iter()
        .map(BuildFacts::version)
        .collect::<Vec<_>>()
        .join("|")
}

/// The validated migration capabilities (QEMU `should_validate_capability`).
const VALIDATED_CAPABILITIES: &[&str] = &["x-ignore-shared", "mapped-ram"];

/// What a stream carries at the top level, read from its records (no body is decoded).
#[derive(Debug, Default)]
struct StreamFacts {
    machine: Option<String>,
    capabilities: Vec<String>,
    commands: Vec<(usize, u16)>,
}

/// The machine type and validated capabilities of a CONFIGURATION record (v4 keeps the v3
/// record's bytes after its type byte; the v3 reader starts at the type byte).
fn configuration(bytes_after_type: &[u8]) -> Result<(String, Vec<String>), String> {
    let mut framed = Vec::with_capacity(bytes_after_type.len() + 1);
    framed.push(0x07);
    framed.extend_from_slice(bytes_after_type);
    let c = Configuration::read(&mut Reader::new(&framed, 0)).map_err(|e| e.to_string())?;
    let caps = c
        .capabilities
        .map(|caps| {
            caps.iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Ok((String::from_utf8_lossy(c.machine).into_owned(), caps))
}

/// A stream as v4: the input itself, or a v3 stream converted (with its own trailer) into an
/// unlinked temporary file, so memory stays bounded whatever the stream's size.
enum AsV4<'a> {
    Same(&'a [u8]),
    Converted(Input),
}

impl AsV4<'_> {
    /// [`walk_stream`] over the v4 stream, releasing what is behind the walk: the input's
    /// through `reached`, a converted copy's itself.
    fn walk<'s>(
        &'s self,
        reached: &mut dyn FnMut(usize),
        each: impl FnMut(Record4<'s>) -> Result<(), String>,
    ) -> Result<StreamFacts, String> {
        match self {
            AsV4::Same(b) => walk_stream(b, reached, each),
            AsV4::Converted(i) => walk_stream(i.bytes(), &mut |at| i.release_before(at), each),
        }
    }
}

/// The stream as v4 (a v3 stream is converted with its own trailer); `file_offset` is its
/// file offset ([`crate::input::Input::stream_start`]: mapped-ram headers hold file offsets).
/// `reached` is called with the offset in `stream` the conversion has read up to.
fn as_v4<'a>(
    stream: &'a [u8],
    file_offset: u64,
    reached: &mut dyn FnMut(usize),
) -> Result<AsV4<'a>, String> {
    match stream_version(stream) {
        Some(3) => upgrade_v3_spooled_at(stream, file_offset, &Default::default(), reached)
            .map(AsV4::Converted)
            .map_err(|e| e.to_string()),
        Some(4) => Ok(AsV4::Same(stream)),
        Some(v) => Err(format!("unsupported file version {v}")),
        None => Err("not a QEVM stream".into()),
    }
}

/// Walks the v4 stream once (each record, its checksum verified once): collects the
/// configuration and COMMAND facts and hands every other record to `each`; `reached` gets the
/// end of each record.
fn walk_stream<'a>(
    v4: &'a [u8],
    reached: &mut dyn FnMut(usize),
    mut each: impl FnMut(Record4<'a>) -> Result<(), String>,
) -> Result<StreamFacts, String> {
    let mut facts = StreamFacts::default();
    for rec in Records4::new(v4) {
        let rec = rec.map_err(|e| e.to_string())?;
        reached(rec.end);
        match rec.record {
            Record4::Configuration(b) => {
                let (machine, caps) = configuration(b)?;
                facts.machine = Some(machine);
                facts.capabilities = caps;
            }
            Record4::Command(c) => facts.commands.push((rec.offset, c.id.number())),
            other => each(other)?,
        }
    }
    Ok(facts)
}

impl Destination {
    fn empty() -> Destination {
        Destination {
            format: FORMAT.into(),
            machine: None,
            qemu: None,
            capabilities: Vec::new(),
            protocols: vec![3, 4],
            vendors: Vec::new(),
            commands: Vec::new(),
            sections: Vec::new(),
            from: Vec::new(),
        }
    }

    fn section_mut(&mut self, name: &str, min: u32, max: u32) -> &mut SectionCaps {
        let i = match self.sections.iter().position(|s| s.name == name) {
            Some(i) => {
                let s = &mut self.sections[i];
                s.min_version = s.min_version.min(min);
                s.max_version = s.max_version.max(max);
                i
            }
            None => {
                self.sections.push(SectionCaps {
                    name: name.into(),
                    min_version: min,
                    max_version: max,
                    max_minor: Vec::new(),
                    subsections: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[i]
    }

    fn add_subsection(s: &mut SectionCaps, name: &str) {
        if !s.subsections.iter().any(|n| n == name) {
            s.subsections.push(name.into());
        }
    }

    fn set_machine(&mut self, machine: String, from: &str) -> Result<(), String> {
        match &self.machine {
            Some(m) if *m != machine => Err(format!(
                "{from} is for machine type {machine}, but the destination is {m}"
            )),
            _ => {
                self.machine = Some(machine);
                Ok(())
            }
        }
    }

    fn set_qemu(&mut self, facts: &'static BuildFacts) {
        self.qemu = Some(facts.version());
        let (major, minor) = facts.build.version();
        // The loader's command table: the codec knows which build introduced each command.
        self.commands = CommandId::ALL
            .iter()
            .filter(|c| c.known_by(major.into(), minor.into()))
            .map(|c| c.number())
            .collect();
        for f in facts.not_in_dump {
            let s = self.section_mut(f.name, f.min_version, f.max_version);
            for sub in f.subsections {
                Destination::add_subsection(s, sub);
            }
        }
        self.from.push(format!("QEMU {} facts", facts.version()));
    }

    /// From a QEMU `-dump-vmstate` JSON. `qemu` names the build that made the dump; without it
    /// the build is inferred ([`infer_build`]).
    pub fn from_dump(dump: &Value, qemu: Option<&str>) -> Result<Destination, String> {
        let obj = dump
            .as_object()
            .ok_or("dump: not a JSON object (is it a -dump-vmstate file?)")?;
        let machine = obj
            .get("vmschkmachine")
            .and_then(|m| m.get("Name"))
            .and_then(Value::as_str)
            .ok_or("dump: no vmschkmachine.Name (is it a -dump-vmstate file?)")?
            .to_string();
        let mut d = Destination::empty();
        let mut types = 0;
        for (key, dev) in obj {
            let Some(desc) = dev.get("Description") else {
                continue;
            };
            types += 1;
            let name = desc.get("name").and_then(Value::as_str).unwrap_or(key);
            let get = |k: &str| desc.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
            let s = d.section_mut(name, get("minimum_version_id"), get("version_id"));
            for sub in desc
                .get("Subsections")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = sub.get("name").and_then(Value::as_str) {
                    Destination::add_subsection(s, n);
                }
            }
        }
        d.from
            .push(format!("dump {machine} ({types} device types)"));
        let facts = match qemu {
            Some(v) => build(v)
                .ok_or_else(|| format!("unknown QEMU build {v} (known: {})", known_builds()))?,
            None => infer_build(dump, &machine)?,
        };
        d.set_machine(machine, "the dump")?;
        d.set_qemu(facts);
        d.sort();
        Ok(d)
    }

    /// Adds what a stream written by the destination build shows (v3 or v4): its machine
    /// type, its validated capabilities, and every section, version, subsection, minor and
    /// command in it.
    pub fn add_stream(&mut self, stream: &[u8], label: &str) -> Result<(), String> {
        self.add_stream_at(stream, 0, label, &mut |_| {})
    }

    /// [`Destination::add_stream`] of a stream at file offset `file_offset` of its file,
    /// calling `reached` with the offset in `stream` each pass has read up to (a mapped input
    /// releases what is behind).
    pub fn add_stream_at(
        &mut self,
        stream: &[u8],
        file_offset: u64,
        label: &str,
        reached: &mut dyn FnMut(usize),
    ) -> Result<(), String> {
        let v4 = as_v4(stream, file_offset, reached)?;
        let facts = v4.walk(reached, |record| {
            let s = match record {
                Record4::Header(h) => {
                    if self.vendors.is_empty() {
                        self.vendors = h.vendors.iter().map(|v| v.id.as_str().to_owned()).collect();
                    }
                    return Ok(());
                }
                Record4::Section(s) if s.kind.has_full_header() => s,
                _ => return Ok(()),
            };
            let name = String::from_utf8_lossy(vmsd_name(s.idstr)).into_owned();
            // A build writes its own version_id; what it accepts below that is not shown.
            let caps = self.section_mut(&name, s.version_id, s.version_id);
            for (i, &m) in s.minors.iter().enumerate() {
                if caps.max_minor.len() <= i {
                    caps.max_minor.resize(i + 1, 0);
                }
                caps.max_minor[i] = caps.max_minor[i].max(m);
            }
            for sub in s.subsections() {
                let sub = sub.map_err(|e| e.to_string())?;
                Destination::add_subsection(caps, &String::from_utf8_lossy(sub.name));
            }
            Ok(())
        })?;
        if let Some(m) = facts.machine {
            self.set_machine(m, label)?;
        }
        for c in &facts.capabilities {
            if !self.capabilities.contains(c) {
                self.capabilities.push(c.clone());
            }
        }
        for &(_, c) in &facts.commands {
            if !self.commands.contains(&c) {
                self.commands.push(c);
            }
        }
        self.commands.sort_unstable();
        self.from.push(format!("stream {label}"));
        self.sort();
        Ok(())
    }

    /// From a stream the destination build wrote.
    pub fn from_stream(stream: &[u8], label: &str) -> Result<Destination, String> {
        let mut d = Destination::empty();
        d.add_stream(stream, label)?;
        Ok(d)
    }

    fn sort(&mut self) {
        self.sections.sort_by(|a, b| a.name.cmp(&b.name));
        for s in &mut self.sections {
            s.subsections.sort();
        }
    }

    /// Reads a destination from any of: a file written by `vmstate caps`, a `-dump-vmstate`
    /// JSON, or a stream (v3 or v4) the destination build wrote.
    pub fn read(bytes: &[u8], label: &str, qemu: Option<&str>) -> Result<Destination, String> {
        Destination::read_at(bytes, 0, label, qemu, &mut |_| {})
    }

    /// [`Destination::read`] of an input whose stream (if it is one) is at file offset
    /// `file_offset` of its file ([`Destination::add_stream_at`] for `reached`).
    pub fn read_at(
        bytes: &[u8],
        file_offset: u64,
        label: &str,
        qemu: Option<&str>,
        reached: &mut dyn FnMut(usize),
    ) -> Result<Destination, String> {
        if stream_version(bytes).is_some() {
            let mut d = Destination::empty();
            return d
                .add_stream_at(bytes, file_offset, label, reached)
                .map(|()| d)
                .map_err(|e| format!("{label}: {e}"));
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "{label}: not a destination file, -dump-vmstate JSON or QEVM stream: {}",
                json_error(bytes, &e)
            )
        })?;
        if v.get("vmschkmachine").is_some() {
            return Destination::from_dump(&v, qemu).map_err(|e| format!("{label}: {e}"));
        }
        match v.get("format").and_then(Value::as_str) {
            Some(FORMAT) => serde_json::from_slice::<Destination>(bytes)
                .map_err(|e| format!("{label}: {}", json_error(bytes, &e))),
            Some(f) => Err(format!("{label}: unknown destination format {f:?}")),
            None => Err(format!(
                "{label}: not a destination file (no \"format\"), -dump-vmstate JSON \
                 (no \"vmschkmachine\") or QEVM stream"
            )),
        }
    }

    /// `pc-i440fx-7.2 (QEMU 7.2)`.
    pub fn name(&self) -> String {
        let shown = |s: &Option<String>, none: &str| {
            s.as_deref().map_or(none.to_string(), |s| {
                vmstate::Escaped(s.as_bytes()).to_string()
            })
        };
        format!(
            "{} (QEMU {})",
            shown(&self.machine, "of unknown machine type"),
            shown(&self.qemu, "build unknown")
        )
    }

    /// One line: machine, build, counts and sources.
    pub fn summary(&self) -> String {
        let subsections: usize = self.sections.iter().map(|s| s.subsections.len()).sum();
        format!(
            "destination {}: {} sections, {} subsections, commands {}, protocols {}{}{}; from {}",
            self.name(),
            self.sections.len(),
            subsections,
            ranges(&self.commands),
            self.protocols
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            if self.vendors.is_empty() {
                String::new()
            } else {
                format!(", vendors {}", self.vendors.join(","))
            },
            if self.capabilities.is_empty() {
                String::new()
            } else {
                format!(", capabilities {}", self.capabilities.join(","))
            },
            self.from.join(" + ")
        )
    }
}

/// `1-10` style ranges of sorted numbers.
fn ranges(v: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j].checked_add(1) == Some(v[j + 1]) {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// Which build made a dump: QEMU 10.0's `hpet` description names its timer count
/// `num_timers_save` (7.2's: `num_timers`); a 7.2 dump must be for a machine type 7.2 defines.
pub fn infer_build(dump: &Value, machine: &str) -> Result<&'static BuildFacts, String> {
    let hpet_fields = dump
        .get("hpet")
        .and_then(|h| h.get("Description"))
        .and_then(|d| d.get("Fields"))
        .and_then(Value::as_array);
    let has_field = |name: &str| {
        hpet_fields
            .into_iter()
            .flatten()
            .any(|f| f.get("field").and_then(Value::as_str) == Some(name))
    };
    let by = |b: QemuBuild| BUILDS.iter().find(|f| f.build == b);
    let defined_by_7_2 =
        MachineType::parse(machine.as_bytes()).is_ok_and(|m| QemuBuild::V7_2.defines(m));
    let found = if has_field("num_timers_save") {
        by(QemuBuild::V10_0)
    } else if has_field("num_timers") && defined_by_7_2 {
        by(QemuBuild::V7_2)
    } else {
        None
    };
    found.ok_or_else(|| {
        format!(
            "cannot tell which QEMU build made the dump for {machine}: give --qemu {}",
            known_builds()
        )
    })
}

/// The vmsd name of a section idstr (the part after a qdev path).
pub fn vmsd_name(idstr: &[u8]) -> &[u8] {
    match idstr.iter().rposition(|&b| b == b'/') {
        Some(i) => &idstr[i + 1..],
        None => idstr,
    }
}

/// Why a stream cannot go to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Machine types differ, or the CONFIGURATION record is missing.
    MachineType,
    /// A validated migration capability differs.
    Capability,
    /// A COMMAND record the destination does not know.
    Command,
    /// A section whose device the destination does not have.
    Device,
    /// A section version outside the destination's range.
    Version,
    /// A subsection the destination does not know.
    Subsection,
    /// A v4 vendor minor or the protocol.
    Protocol,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::MachineType => "machine type",
            Reason::Capability => "capability",
            Reason::Command => "command",
            Reason::Device => "device",
            Reason::Version => "version",
            Reason::Subsection => "subsection",
            Reason::Protocol => "protocol",
        })
    }
}

/// One incompatibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its kind.
    pub reason: Reason,
    /// What and where.
    pub text: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.text)
    }
}

/// Every reason `stream` (v3 or v4) cannot be loaded by `dest` (empty: it can).
pub fn check(stream: &[u8], dest: &Destination) -> Result<Vec<Problem>, String> {
    check_at(stream, 0, dest, &mut |_| {})
}

/// [`check`] of a stream at file offset `file_offset` of its file, calling `reached` with the
/// offset in `stream` each pass has read up to (a mapped input releases what is behind).
pub fn check_at(
    stream: &[u8],
    file_offset: u64,
    dest: &Destination,
    reached: &mut dyn FnMut(usize),
) -> Result<Vec<Problem>, String> {
    let v4 = as_v4(stream, file_offset, reached)?;
    let caps = host_caps(dest)?;
    let mut vendors = vmstate::v4::wire::VendorChain::new();
    let mut report = Box::new(Report::<256>::new());
    let mut headers = 0;
    let facts = v4.walk(reached, |record| {
        match record {
            Record4::Header(h) => {
                headers += 1;
                vendors = h.vendors;
            }
            Record4::Section(s) if s.kind.has_full_header() => {
                let req = SectionRequirement::from_section(&s).map_err(|e| e.to_string())?;
                vmstate::v4::caps::check(&vendors, &req, &caps, &mut report);
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut problems = Vec::new();
    let mut add = |reason, text: String| problems.push(Problem { reason, text });
    // Machine names come from the inputs: shown escaped.
    let shown = |m: &Option<String>| {
        m.as_deref()
            .map(|m| vmstate::Escaped(m.as_bytes()).to_string())
    };
    match (&shown(&facts.machine), &shown(&dest.machine)) {
        (Some(s), Some(d)) if s != d => add(
            Reason::MachineType,
            format!(
                "the stream is for machine type {s}, the destination is {d} (QEMU: \"Machine \
                 type received is '{s}' and local is '{d}'\")"
            ),
        ),
        (None, Some(d)) => add(
            Reason::MachineType,
            format!(
                "the stream has no CONFIGURATION record; a {d} destination expects one (QEMU: \
                 \"Configuration section missing\")"
            ),
        ),
        _ => {}
    }
    for cap in VALIDATED_CAPABILITIES {
        let src = facts.capabilities.iter().any(|c| c == cap);
        let dst = dest.capabilities.iter().any(|c| c == cap);
        if src != dst {
            let on = |b| if b { "on" } else { "off" };
            add(
                Reason::Capability,
                format!(
                    "capability {cap} is {} in the stream and {} at the destination",
                    on(src),
                    on(dst)
                ),
            );
        }
    }
    for &(offset, c) in &facts.commands {
        if !dest.commands.contains(&c) {
            add(
                Reason::Command,
                format!(
                    "at byte {offset} ({offset:#x}): COMMAND {c} ({}) is unknown to the destination{}",
                    CommandId::from_u16(c).map_or("(unknown)", CommandId::name),
                    dest.qemu
                        .as_deref()
                        .map(|q| format!(" (QEMU {q})"))
                        .unwrap_or_default()
                ),
            );
        }
    }
    if headers > 0 && !dest.protocols.contains(&4) && !dest.protocols.contains(&3) {
        add(
            Reason::Protocol,
            "destination speaks neither savevm protocol 4 nor 3".into(),
        );
    }
    for i in report.found.iter() {
        let reason = match i {
            Incompatibility::Protocol { .. } | Incompatibility::Minor { .. } => Reason::Protocol,
            Incompatibility::UnknownDevice { .. } => Reason::Device,
            Incompatibility::Version { .. } => Reason::Version,
            Incompatibility::UnknownSubsection { .. } => Reason::Subsection,
        };
        add(reason, i.to_string());
    }
    if report.total > report.found.len() {
        add(
            Reason::Protocol,
            format!(
                "… and {} more section problems",
                report.total - report.found.len()
            ),
        );
    }
    Ok(problems)
}

/// The destination as v4 capabilities (the postcard structure of docs/FORMAT.md §11).
pub fn host_caps(dest: &Destination) -> Result<Box<HostCaps<'_>>, String> {
    let vendors = dest
        .vendors
        .iter()
        .map(|v| {
            vmstate::VendorId::parse(v.as_bytes())
                .ok_or_else(|| format!("destination: vendor id {v:?} is not a reverse FQDN"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let full = |f: vmstate::v4::caps::Full| format!("destination: too many {}", f.list);
    let mut caps = Box::new(HostCaps::new(&dest.protocols, &vendors).map_err(full)?);
    for s in &dest.sections {
        caps.add_device(&s.name, s.min_version, s.max_version, &s.max_minor)
            .map_err(full)?;
        for sub in &s.subsections {
            caps.add_subsection(sub).map_err(full)?;
        }
    }
    Ok(caps)
}

/// Counts of each reason, for a test or a summary.
pub fn reasons(problems: &[Problem]) -> BTreeMap<Reason, usize> {
    let mut m = BTreeMap::new();
    for p in problems {
        *m.entry(p.reason).or_insert(0) += 1;
    }
    m
}

/// Opens an input (mapped; a pipe is spooled, see [`crate::input`]).
fn read_file(p: &Path, expect: Expect) -> Result<Input, Failure> {
    Input::open_as(p, expect).map_err(|e| Failure::io(p, e))
}

/// `result`, unless `input` changed while it was read (then that is the error).
fn unchanged<T>(p: &Path, input: &Input, result: T) -> Result<T, Failure> {
    input.unchanged().map_err(|e| Failure::io(p, e))?;
    Ok(result)
}

/// A JSON error with the byte offset it was found at (serde_json counts lines and columns).
pub fn json_error(bytes: &[u8], e: &serde_json::Error) -> String {
    let offset = if e.is_eof() {
        bytes.len()
    } else {
        bytes
            .split_inclusive(|&b| b == b'\n')
            .take(e.line().saturating_sub(1))
            .map(<[u8]>::len)
            .sum::<usize>()
            + e.column().saturating_sub(1)
    };
    format!("at byte {offset} (0x{offset:x}): {e}")
}

/// What `vmstate caps` was given.
#[derive(Debug, Default)]
pub struct CapsArgs<'p> {
    /// `--dump`: QEMU `-dump-vmstate` JSON of the destination build.
    pub dump: Option<&'p Path>,
    /// `--stream`: streams the destination build wrote.
    pub streams: Vec<&'p Path>,
    /// `--qemu`: the destination build, when it cannot be inferred.
    pub qemu: Option<&'p str>,
    /// `--vendor`: the destination's v4 vendor chain.
    pub vendors: Vec<String>,
    /// `--capability`: validated migration capabilities the destination will set.
    pub capabilities: Vec<String>,
}

/// Builds the destination `vmstate caps` describes. Errors: [`Failure::Invalid`] for inputs
/// that are not what they should be, [`Failure::Unreadable`] for files that cannot be read.
pub fn destination(args: &CapsArgs<'_>) -> Result<Destination, Failure> {
    let invalid = Failure::Invalid;
    let mut d = match args.dump {
        Some(p) => {
            let input = read_file(p, Expect::StreamOrText)?;
            let bytes = input.bytes();
            let v = serde_json::from_slice::<Value>(bytes);
            let v = unchanged(p, &input, v)?
                .map_err(|e| invalid(format!("{}: {}", p.display(), json_error(bytes, &e))))?;
            Destination::from_dump(&v, args.qemu).map_err(invalid)?
        }
        None => Destination::empty(),
    };
    for p in &args.streams {
        let input = read_file(p, Expect::Stream)?;
        let start = input.stream_start() as u64;
        let label = p.display().to_string();
        let added = d.add_stream_at(input.bytes(), start, &label, &mut |at| {
            input.release_before(at)
        });
        unchanged(p, &input, added)?.map_err(|e| invalid(format!("{}: {e}", p.display())))?;
    }
    if args.dump.is_none()
        && let Some(q) = args.qemu
    {
        let facts = build(q).ok_or_else(|| invalid(format!("unknown QEMU build {q}")))?;
        d.set_qemu(facts);
    }
    if !args.vendors.is_empty() {
        d.vendors = args.vendors.clone();
    }
    for c in &args.capabilities {
        if !VALIDATED_CAPABILITIES.contains(&c.as_str()) {
            return Err(invalid(format!(
                "capability {c}: QEMU validates only {}",
                VALIDATED_CAPABILITIES.join(", ")
            )));
        }
        if !d.capabilities.contains(c) {
            d.capabilities.push(c.clone());
        }
    }
    d.sort();
    Ok(d)
}

/// `vmstate check IN --dest DEST`: every problem on its own line, or `compatible with …`. The
/// count is the number of problems; `Err` is for inputs that cannot be read
/// ([`Failure::Unreadable`]) or are not a stream or destination ([`Failure::Invalid`]).
pub fn check_files(
    input: &Path,
    dest: &Path,
    qemu: Option<&str>,
) -> Result<(String, usize), Failure> {
    let stream = read_file(input, Expect::Stream)?;
    let dest_input = read_file(dest, Expect::StreamOrText)?;
    let start = dest_input.stream_start() as u64;
    let label = dest.display().to_string();
    let d = Destination::read_at(dest_input.bytes(), start, &label, qemu, &mut |at| {
        dest_input.release_before(at)
    });
    let d = unchanged(dest, &dest_input, d)?.map_err(Failure::Invalid)?;
    drop(dest_input);
    let start = stream.stream_start() as u64;
    let problems = check_at(stream.bytes(), start, &d, &mut |at| {
        stream.release_before(at)
    });
    let problems = unchanged(input, &stream, problems)?
        .map_err(|e| Failure::Invalid(format!("{}: {e}", input.display())))?;
    if problems.is_empty() {
        return Ok((
            format!("compatible: {} loads into {}\n", input.display(), d.name()),
            0,
        ));
    }
    let mut text = String::new();
    for p in &problems {
        text.push_str(&format!("{p}\n"));
    }
    Ok((text, problems.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_ranges() {
        assert_eq!(
            build("7.2").map(BuildFacts::version).as_deref(),
            Some("7.2")
        );
        assert_eq!(
            build("10.0").map(BuildFacts::version).as_deref(),
            Some("10.0")
        );
        assert!(build("9.2").is_none());
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[]), "none");
        // A destination file is input: the largest command number must not overflow.
        assert_eq!(ranges(&[65534, 65535]), "65534-65535");
    }
}
