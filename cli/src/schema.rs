//! `--schema FILE`: layouts for the sections of a stream that describes nothing itself (machine
//! types up to pc-*-2.2 send neither section footers nor a VMDESCRIPTION trailer, so a body no
//! typed model reads has no known end).
//!
//! Two kinds of file are given, each any number of times, and both are needed:
//!
//! * a **VMDESCRIPTION** — a stream with a trailer, or its description as JSON (`vmstate inspect
//!   --desc`, analyze-migration.py `-d desc`) — written by the same QEMU build, e.g. for a newer
//!   machine type. It gives the wire layout: type names, wire sizes, array lengths, nested
//!   structs. A section takes the layout of an entry with the same vmsd name and the same
//!   version (the version decides which fields a vmsd writes). Subsections are the ones the
//!   stream names, as QEMU's loader reads them (`05 len name version`, the name extending the
//!   vmsd's), each with a layout of that name from any description, at the version the stream
//!   sends ([`crate::generic::decode_prefix_open`]).
//! * the build's **`-dump-vmstate`** for the stream's machine type. A dump has no wire types: a
//!   struct's `size` is its C size, QEMU 7.2 writes no array lengths (10.0 writes `num` for
//!   fixed arrays), a variable array (`VMS_VARRAY_*`, `VMS_VBUFFER`) looks like one element,
//!   and of a `field_exists` test it says only that there is one. So a dump does not measure a
//!   body by itself: it checks a description's layout of each vmsd it lists (and of its
//!   subsections), walking both field lists at the version sent:
//!   - fields the dump gives a higher `version_id` are not sent at this version;
//!   - a field with a test is kept or left out as the machine type the dump names decides it,
//!     for the tests QEMU decides by device class or machine type (PCI config space
//!     size, piix4_pm's `smb`, PCI hotplug and `acpi_index`, the last sent by 7.2's machine
//!     type, not by 2.2's); any other test stops the walk ("conditional field");
//!   - an array the dump does not give as fixed (a dump with `num`s), or a field the
//!     description has no object for (QEMU describes each element it sends: none were), has a
//!     length QEMU takes from another field or the configuration: the walk stops ("variable
//!     array") unless the user says the description's stream had the same machine options
//!     ([`Schema::same_config`], `--schema-same-config`);
//!   - otherwise both lists must name the same fields (QEMU's description spells a repeated
//!     name `name[n]`).
//!
//! QEMU's `-dump-vmstate` lists device classes only: `cpu_common` and `cpu` (the x86 CPU's
//! legacy vmsd), `timer`, `apic` and other sections registered outside a device class are never
//! in a dump, so their layouts come from the description alone (QEMU 7.2's `cpu_common`, `cpu`
//! and `apic` tables have no tests and no variable arrays).
//!
//! A section no description has at its version stops the walk ("not in the schema"), as does
//! a description given without a dump ("unchecked layout"). Every stop names the section,
//! instance, version, field and byte offset, and why; nothing is guessed.

use crate::desc::{BodyDesc, Description, FieldDesc, FieldKind, Repeat, SubsectionDesc};
use crate::dest::{json_error, vmsd_name};
use crate::generic::{self, Body};
use crate::model::{SectionMeta, section_label};
use crate::model::{StreamError, find_description};
use serde_json::Value;
use std::fmt;
use std::sync::OnceLock;
use vmstate::SectionHead;
use vmstate_devices::machine::{Chipset, MachineType};

/// Layouts from `--schema` files (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Descriptions, with the file they came from.
    descriptions: Vec<(String, Description<'static>)>,
    /// `-dump-vmstate` JSON objects, with the file they came from.
    dumps: Vec<(String, Value)>,
    /// The user says the descriptions' streams were written with the same machine options
    /// (`-m`, `-smp`, devices and their properties) as the stream walked: an array whose
    /// length is not fixed takes the length the description shows (QEMU sizes most of them
    /// from the configuration: memory slots, HPET timers, FIFO sizes).
    pub same_config: bool,
}

/// Why a section's layout cannot be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The dump marks a `field_exists` test.
    Conditional,
    /// An array whose length the dump does not fix.
    Variable,
    /// No description has the vmsd at the stream's version.
    NotInSchema,
    /// The description and the dump list different fields.
    Disagree,
    /// No dump was given to check a description's layout against.
    NoDump,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Conditional => "conditional field",
            Reason::Variable => "variable array",
            Reason::NotInSchema => "not in the schema",
            Reason::Disagree => "the description and the dump disagree",
            Reason::NoDump => "unchecked layout",
        })
    }
}

/// Where a layout stops: the first field that cannot be measured, its dotted name, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stop {
    /// The fields before the stop, per nesting level (outermost first).
    levels: Vec<Vec<FieldDesc<'static>>>,
    field: String,
    reason: Reason,
    detail: String,
}

static INSTALLED: OnceLock<Schema> = OnceLock::new();

/// Makes `schema` the one every walk of this process uses (the binary's `--schema`); only the
/// first call counts.
pub fn install(schema: Schema) {
    let _ = INSTALLED.set(schema);
}

/// The schema [`install`]ed, if any.
pub fn installed() -> Option<&'static Schema> {
    INSTALLED.get().filter(|s| !s.is_empty())
}

impl Schema {
    /// Whether no file was added.
    pub fn is_empty(&self) -> bool {
        self.descriptions.is_empty() && self.dumps.is_empty()
    }

    /// Adds a file: a stream with a VMDESCRIPTION trailer, a description JSON, or a
    /// `-dump-vmstate` JSON. `label` names it in errors.
    pub fn add(&mut self, bytes: &[u8], label: &str) -> Result<(), String> {
        if crate::v4tools::stream_version(bytes).is_some() {
            let found = find_description(bytes).map_err(|e| format!("{label}: {e}"))?;
            let (_, d) = found.ok_or_else(|| {
                format!(
                    "{label}: a stream without a VMDESCRIPTION trailer describes no section \
                     (give one written with a newer machine type, or its desc.json)"
                )
            })?;
            self.descriptions.push((label.into(), d.into_owned()));
            return Ok(());
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "{label}: not a stream, VMDESCRIPTION JSON or -dump-vmstate JSON: {}",
                json_error(bytes, &e)
            )
        })?;
        if v.get("vmschkmachine").is_some() {
            self.dumps.push((label.into(), v));
            return Ok(());
        }
        if v.get("devices").is_some() {
            let d = Description::from_json_bytes(bytes).map_err(|e| format!("{label}: {e}"))?;
            self.descriptions.push((label.into(), d.into_owned()));
            return Ok(());
        }
        Err(format!(
            "{label}: neither a VMDESCRIPTION (no \"devices\") nor a -dump-vmstate JSON \
             (no \"vmschkmachine\")"
        ))
    }

    /// The description entry for vmsd `name` at `version`: the one of the same idstr first.
    fn entry(&self, idstr: &[u8], name: &str, version: u32) -> Option<&BodyDesc<'static>> {
        let all = || self.descriptions.iter().flat_map(|(_, d)| &d.devices);
        let fits = |d: &&crate::desc::Device<'static>| {
            d.vmsd
                .as_ref()
                .is_some_and(|(n, v)| n.as_str() == name && *v == version)
        };
        all()
            .filter(fits)
            .find(|d| d.name.as_bytes() == idstr)
            .or_else(|| all().find(fits))
            .map(|d| &d.body)
    }

    /// The dump's description of vmsd `name` (the first device class whose vmsd it is), with
    /// the dump's label and how [`check`] reads that dump.
    fn dump_entry<'c>(&self, name: &str, section: &'c str) -> Option<(&str, &Value, Cx<'c>)> {
        self.dumps.iter().find_map(|(label, dump)| {
            let desc = dump.as_object()?.values().find_map(|class| {
                let d = class.get("Description")?;
                (d.get("name")?.as_str()? == name).then_some(d)
            })?;
            Some((label.as_str(), desc, self.cx(dump, section)))
        })
    }

    /// The dump's description of subsection `name`, wherever a vmsd lists it (nested structs'
    /// vmsds too); `section` as in [`Schema::dump_entry`].
    fn dump_subsection<'c>(&self, name: &str, section: &'c str) -> Option<(&str, &Value, Cx<'c>)> {
        fn find<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
            match v {
                Value::Object(m) => {
                    let listed = m.get("Subsections").and_then(Value::as_array);
                    listed
                        .into_iter()
                        .flatten()
                        .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
                        .or_else(|| m.values().find_map(|x| find(x, name)))
                }
                Value::Array(a) => a.iter().find_map(|x| find(x, name)),
                _ => None,
            }
        }
        self.dumps.iter().find_map(|(label, dump)| {
            let sub = find(dump, name)?;
            Some((label.as_str(), sub, self.cx(dump, section)))
        })
    }

    /// How [`check`] reads `dump` for a section of vmsd `section`.
    fn cx<'c>(&self, dump: &Value, section: &'c str) -> Cx<'c> {
        Cx {
            arrays: marks_arrays(dump),
            machine: dump
                .get("vmschkmachine")
                .and_then(|m| m.get("Name"))
                .and_then(Value::as_str)
                .and_then(|n| MachineType::parse(n.as_bytes()).ok()),
            section,
            same_config: self.same_config,
        }
    }

    /// A subsection `name` of vmsd `vmsd` from any description (at any version: the header's
    /// version is checked when it is read), checked against the dump.
    fn subsection(&self, vmsd: &str, name: &[u8]) -> Result<&SubsectionDesc<'static>, String> {
        let shown = vmstate::Escaped(name);
        let found = self
            .descriptions
            .iter()
            .flat_map(|(_, d)| &d.devices)
            .find_map(|d| find_subsection(&d.body, name));
        let s = found.ok_or_else(|| {
            format!(
                "subsection {shown} of {vmsd}: not in the schema (no description given with \
                 --schema has it)"
            )
        })?;
        if let Some((label, sub, cx)) = self.dump_subsection(s.vmsd_name.as_str(), vmsd) {
            match check(&s.body, sub, s.version, &cx, "") {
                Err(stop) => {
                    return Err(format!(
                        "subsection {shown}, field {}: {} ({}; {label})",
                        stop.field, stop.reason, stop.detail
                    ));
                }
                // A subsection's layout is taken as described: one that the machine type
                // changes is not measured.
                Ok(adjusted) if adjusted.fields != s.body.fields => {
                    return Err(format!(
                        "subsection {shown}: conditional field (the machine type leaves out \
                         fields the description has; {label})"
                    ));
                }
                Ok(_) => {}
            }
        }
        Ok(s)
    }

    /// Measures the FULL section `head` whose body starts `rest`: its decoded body and length,
    /// or where and why it cannot be measured.
    pub fn measure(
        &self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
    ) -> Result<(Body<'static>, usize), Stopped> {
        self.decode(&SectionMeta::of(head), rest)
    }

    /// [`Schema::measure`] for a section the walk kept (an [`crate::model::Item::Opaque`]
    /// holds its header and body): its fields and subsections as a tree.
    pub fn decode(
        &self,
        head: &SectionMeta<'_>,
        rest: &[u8],
    ) -> Result<(Body<'static>, usize), Stopped> {
        let name = String::from_utf8_lossy(vmsd_name(head.idstr)).into_owned();
        let section = section_label(head.idstr, head.instance_id, head.section_id);
        let base = head.body_offset;
        let stop = |offset: usize, field: &str, reason: Reason, detail: String| {
            let field = if field.is_empty() {
                String::new()
            } else {
                format!(", field {field}")
            };
            Stopped {
                offset,
                section: section.clone(),
                why: format!("version {}{field}: {reason} ({detail})", head.version_id),
            }
        };
        let Some(body) = self.entry(head.idstr, &name, head.version_id) else {
            let versions: Vec<String> = self
                .descriptions
                .iter()
                .flat_map(|(_, d)| &d.devices)
                .filter_map(|d| d.vmsd.as_ref())
                .filter(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.to_string())
                .collect();
            let why = match (versions.is_empty(), self.dump_entry(&name, &name)) {
                (false, _) => format!(
                    "the descriptions given have vmsd {name} at version {} only",
                    versions.join(", ")
                ),
                (true, Some((label, _, _))) => format!(
                    "no description given has vmsd {name}; the dump {label} lists it, but a \
                     dump does not give wire sizes"
                ),
                (true, None) => format!("neither a description nor a dump given has vmsd {name}"),
            };
            return Err(stop(base, "", Reason::NotInSchema, why));
        };
        if self.dumps.is_empty() {
            return Err(stop(
                base,
                "",
                Reason::NoDump,
                format!(
                    "give the build's -dump-vmstate with --schema too: a description shows the \
                     fields one stream had, and whether a field with a test is sent depends on \
                     the machine type or state (vmsd {name})"
                ),
            ));
        }
        let layout = match self.dump_entry(&name, &name) {
            Some((label, dump, cx)) => match check(body, dump, head.version_id, &cx, "") {
                Ok(layout) => layout,
                Err(s) => {
                    let offset = prefix_len(&s.levels, rest, base).map_or(base, |n| base + n);
                    return Err(stop(
                        offset,
                        &s.field,
                        s.reason,
                        format!("{}; {label}", s.detail),
                    ));
                }
            },
            // Not a device class's vmsd (cpu_common, cpu, apic, ...): no dump lists it.
            None => body.clone(),
        };
        let find = |vmsd: &str, sub: &[u8]| self.subsection(vmsd, sub);
        generic::decode_prefix_open(&layout, &name, rest, base, &find).map_err(|error| Stopped {
            offset: error.offset,
            section: section.clone(),
            why: format!(
                "version {}{}: {}",
                head.version_id,
                if error.path.is_empty() {
                    String::new()
                } else {
                    format!(", field {}", vmstate::Escaped(error.path.as_bytes()))
                },
                error.message
            ),
        })
    }
}

/// Where and why `--schema` could not measure a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Byte offset: the field that cannot be measured, or the body's start.
    pub offset: usize,
    /// `'cpu_common' instance 0 (id 4)`.
    pub section: String,
    /// `version 3, field parent_obj.config: conditional field (…)`.
    pub why: String,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at byte {} (0x{:x}): section {} {}: --schema cannot measure the section",
            self.offset, self.offset, self.section, self.why
        )
    }
}

impl From<Stopped> for StreamError {
    fn from(s: Stopped) -> Self {
        let offset = s.offset;
        let message = s.to_string();
        // `Mismatch` prints its own offset first.
        let message = message
            .split_once("): ")
            .map_or(message.clone(), |(_, m)| m.to_string());
        StreamError::Mismatch { offset, message }
    }
}

fn find_subsection<'s>(
    body: &'s BodyDesc<'static>,
    name: &[u8],
) -> Option<&'s SubsectionDesc<'static>> {
    for s in body.subsections() {
        if s.vmsd_name.as_bytes() == name {
            return Some(s);
        }
        if let Some(x) = find_subsection(&s.body, name) {
            return Some(x);
        }
    }
    body.fields.iter().find_map(|f| match &f.kind {
        FieldKind::Struct(s) | FieldKind::Inline(s) => find_subsection(&s.body, name),
        FieldKind::Leaf => None,
    })
}

/// Whether a dump gives fixed arrays their length (`num`: QEMU 8.0 and later write it; 7.2
/// does not, so its dumps cannot tell an array from one element).
fn marks_arrays(dump: &Value) -> bool {
    match dump {
        Value::Object(m) => m.contains_key("num") || m.values().any(marks_arrays),
        Value::Array(a) => a.iter().any(marks_arrays),
        _ => false,
    }
}

fn int(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// A `field_exists` test whose result QEMU decides by the device's class or the machine type
/// (not by device state), so the machine type the dump names decides it.
struct Test {
    /// The vmsd the field belongs to (for nested structs, the struct's).
    vmsd: &'static str,
    /// The field's name.
    field: &'static str,
    /// Which of the vmsd's fields of that name (0: the first).
    nth: usize,
    /// Whether QEMU sends it: given the section's vmsd and the machine type; `None` when the
    /// rule does not cover them.
    sent: fn(&str, MachineType) -> Option<bool>,
}

/// PCI functions of the PC chipsets whose class is conventional PCI
/// (`INTERFACE_CONVENTIONAL_PCI_DEVICE` in `hw/pci-host/i440fx.c`, `hw/isa/piix3.c`,
/// `hw/acpi/piix4.c`): their config space is 256 bytes.
const CONVENTIONAL_PCI: &[&str] = &["I440FX", "PIIX3", "piix4_pm"];

fn piix4(m: MachineType) -> bool {
    m.chipset == Chipset::I440fx
}

/// The tests of QEMU 7.2 (and 10.0, unchanged) that the sections of a `pc-i440fx` machine
/// type meet, from the builds' sources. A `-global` on the source's command line that sets
/// one of these properties is not seen.
const TESTS: &[Test] = &[
    // hw/pci/pci.c `vmstate_pci_device`: `config` under `migrate_is_not_pcie`, then under
    // `migrate_is_pcie` (`pci_is_express`: the device class).
    Test {
        vmsd: "PCIDevice",
        field: "config",
        nth: 0,
        sent: |section, _| CONVENTIONAL_PCI.contains(&section).then_some(true),
    },
    Test {
        vmsd: "PCIDevice",
        field: "config",
        nth: 1,
        sent: |section, _| CONVENTIONAL_PCI.contains(&section).then_some(false),
    },
    // hw/acpi/piix4.c `piix4_vmstate_need_smbus`: `pm_smbus_vmstate_needed()`, false where
    // the machine class sets `smbus_no_migration_support` (pc-i440fx ≤ 3.1, pc_piix.c).
    Test {
        vmsd: "piix4_pm",
        field: "smb",
        nth: 0,
        sent: |_, m| piix4(m).then_some(!m.at_most(3, 1)),
    },
    // `use_acpi_hotplug_bridge`: property `acpi-pci-hotplug-with-bridge-support`, off on
    // ≤ 1.7 (`pc_compat_1_7`).
    Test {
        vmsd: "piix4_pm",
        field: "acpi_pci_hotplug.acpi_pcihp_pci_status[0x0]",
        nth: 0,
        sent: |_, m| piix4(m).then_some(m.at_most(1, 7)),
    },
    Test {
        vmsd: "piix4_pm",
        field: "acpi_pci_hotplug.hotplug_select",
        nth: 0,
        sent: |_, m| piix4(m).then_some(!m.at_most(1, 7)),
    },
    Test {
        vmsd: "piix4_pm",
        field: "acpi_pci_hotplug.acpi_pcihp_pci_status",
        nth: 0,
        sent: |_, m| piix4(m).then_some(!m.at_most(1, 7)),
    },
    // `vmstate_test_migrate_acpi_index`: also off where `x-not-migrate-acpi-index` is on
    // (`hw_compat_6_2`).
    Test {
        vmsd: "piix4_pm",
        field: "acpi_pci_hotplug.acpi_index",
        nth: 0,
        sent: |_, m| piix4(m).then_some(!m.at_most(6, 2)),
    },
];

/// What [`check`] needs besides the two bodies.
struct Cx<'c> {
    /// Whether the dump gives fixed arrays their length ([`marks_arrays`]).
    arrays: bool,
    /// The machine type the dump names.
    machine: Option<MachineType>,
    /// The section's vmsd.
    section: &'c str,
    /// [`Schema::same_config`].
    same_config: bool,
}

/// Walks the description's fields of one body and the dump's fields of the same vmsd at
/// `version` side by side (module docs) and returns the body's layout for the stream's
/// machine type: a field whose test the machine type decides ([`TESTS`]) is kept or left out
/// accordingly. `prefix` names the body's path.
fn check(
    body: &BodyDesc<'static>,
    dump: &Value,
    version: u32,
    cx: &Cx<'_>,
    prefix: &str,
) -> Result<BodyDesc<'static>, Stop> {
    let vmsd = dump.get("name").and_then(Value::as_str).unwrap_or_default();
    let fields = dump
        .get("Fields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut kept: Vec<FieldDesc<'static>> = Vec::new();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut i = 0;
    let stop = |kept: &[FieldDesc<'static>], field: &str, reason, detail: String| Stop {
        levels: vec![kept.to_vec()],
        field: format!("{prefix}{field}"),
        reason,
        detail,
    };
    for f in fields {
        let name = f.get("field").and_then(Value::as_str).unwrap_or_default();
        let nth = match seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => {
                *k += 1;
                *k
            }
            None => {
                seen.push((name, 0));
                0
            }
        };
        if int(f, "version_id").unwrap_or(0) > u64::from(version) {
            continue;
        }
        // QEMU's description names the fields of a name that repeats in the vmsd `name[n]`.
        let repeated = format!("{name}[{nth}]");
        let d = body
            .fields
            .get(i)
            .filter(|d| d.name == name || d.name == repeated);
        if f.get("field_exists").and_then(Value::as_bool) == Some(true) {
            let test = TESTS
                .iter()
                .find(|t| t.vmsd == vmsd && t.field == name && t.nth == nth);
            let sent = match (test, cx.machine) {
                (Some(t), Some(m)) => (t.sent)(cx.section, m),
                _ => None,
            };
            match (sent, d) {
                (None, _) => {
                    return Err(stop(
                        &kept,
                        name,
                        Reason::Conditional,
                        "the dump marks a field_exists test: whether QEMU sent it depends on \
                         the device's state or a property this tool does not know"
                            .into(),
                    ));
                }
                // Not sent: the description's field of that name is this one if it has the
                // dump's element size (the alternative of a pair has another size).
                (Some(false), Some(d)) => {
                    let same = f.get("Description").is_some() || int(f, "size") == Some(d.size);
                    if same {
                        i += run_len(body, i);
                    }
                    continue;
                }
                (Some(false), None) => continue,
                (Some(true), None) => {
                    return Err(stop(
                        &kept,
                        name,
                        Reason::Conditional,
                        "QEMU sends it on this machine type, the description does not have it"
                            .into(),
                    ));
                }
                (Some(true), Some(_)) => {}
            }
        }
        let Some(d) = d else {
            // QEMU describes each element sent: a field with none sent has no object. The
            // dump's field is then an array whose length is not fixed (a fixed array has
            // elements): the stream at hand may have sent some.
            let later = body.fields.get(i..).unwrap_or_default();
            if !later.iter().any(|d| d.name == name || d.name == repeated) {
                if cx.same_config {
                    continue;
                }
                return Err(stop(
                    &kept,
                    name,
                    Reason::Variable,
                    "the description's stream sent no element of it, so its length is not \
                     fixed (give --schema-same-config if that stream was written with the same \
                     machine options)"
                        .into(),
                ));
            }
            let found = body.fields.get(i).map_or("has no more fields".into(), |d| {
                format!("has {} here", d.name)
            });
            return Err(stop(
                &kept,
                name,
                Reason::Disagree,
                format!("the dump has this field, the description {found}"),
            ));
        };
        let run = run_len(body, i);
        let elements: u64 = body.fields[i..i + run]
            .iter()
            .map(|e| match e.repeat {
                Repeat::ArrayLen(n) => n,
                _ => 1,
            })
            .sum();
        let array = run > 1 || matches!(d.repeat, Repeat::ArrayLen(_) | Repeat::Index(_));
        if cx.arrays {
            match int(f, "num") {
                Some(n) if n != elements => {
                    return Err(stop(
                        &kept,
                        name,
                        Reason::Disagree,
                        format!("the dump's array has {n} elements, the description's {elements}"),
                    ));
                }
                None if array && !cx.same_config => {
                    return Err(stop(
                        &kept,
                        name,
                        Reason::Variable,
                        format!(
                            "the description shows {elements} elements; the dump gives no \
                             fixed length: the count is another field's value (give \
                             --schema-same-config if the description's stream was written with \
                             the same machine options)"
                        ),
                    ));
                }
                _ => {}
            }
        }
        for e in &body.fields[i..i + run] {
            let mut e = e.clone();
            if let Some(nested) = f.get("Description")
                && let FieldKind::Struct(s) | FieldKind::Inline(s) = &mut e.kind
            {
                let nv = int(nested, "version_id").unwrap_or(0) as u32;
                let inner = check(&s.body, nested, nv, cx, &format!("{prefix}{name}.")).map_err(
                    |mut st| {
                        st.levels.insert(0, kept.clone());
                        st
                    },
                )?;
                s.body = inner;
            }
            kept.push(e);
        }
        i += run;
    }
    if let Some(d) = body.fields.get(i) {
        return Err(stop(
            &kept,
            &d.name,
            Reason::Disagree,
            "the description has this field, the dump does not at this version".into(),
        ));
    }
    Ok(BodyDesc {
        fields: kept,
        subsections: body.subsections.clone(),
    })
}

/// How many field objects from `i` on are one array (QEMU writes some arrays one object per
/// element).
fn run_len(body: &BodyDesc<'_>, i: usize) -> usize {
    body.fields
        .get(i + 1..)
        .unwrap_or_default()
        .iter()
        .take_while(|e| e.continues)
        .count()
        + 1
}

/// Bytes the fields of `levels` (outermost first, each the fields before the stop at that
/// depth) take in `rest`: where a stop is in the stream. `None` when they do not decode.
fn prefix_len(levels: &[Vec<FieldDesc<'static>>], rest: &[u8], base: usize) -> Option<usize> {
    let mut n = 0;
    for fields in levels {
        let before = BodyDesc {
            fields: fields.clone(),
            subsections: None,
        };
        let (_, m) = generic::decode_prefix(&before, rest.get(n..)?, base + n).ok()?;
        n += m;
    }
    Some(n)
}
