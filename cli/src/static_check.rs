//! `vmstate static-check`: the migration-compatibility check of QEMU's
//! `scripts/vmstate-static-checker.py` (QEMU 10.0) between two `-dump-vmstate` JSON dumps,
//! reimplemented (not copied) so that its standard output and exit status equal the script's
//! line for line; and an exporter that writes our own description tables in the same JSON so
//! they can be compared with a real QEMU dump.
//!
//! A dump is an object keyed by section (QOM type) name; each section has `Name`,
//! `version_id`, `minimum_version_id` and a `Description` (`name`, `version_id`,
//! `minimum_version_id`, `Fields`, optional `Subsections`); each field has `field`,
//! `version_id`, `field_exists`, `size` and, for nested structs, a `Description`. The special
//! section `vmschkmachine` names the machine type.
//!
//! The rules, as the script applies them (sections, entries and fields in file order):
//! * a source section missing in the destination (also under its renamed name, see
//!   [`RENAMED_SECTIONS`]) is a problem; different machine types only warn;
//! * a source `version_id` above the destination's is a problem (sections, descriptions,
//!   nested descriptions, subsections, fields); one below the destination's
//!   `minimum_version_id` is a problem for descriptions, but for a *section* the script
//!   prints only `Section "NAME" ` — no newline, not counted — so the next line it prints
//!   continues that one (and at the end of the output the text ends without a newline). We
//!   print the same ([`Finding::SectionMinimumVersion`]);
//! * a key of the source's section or description missing in the destination;
//! * description names that differ (the rest of that description is skipped);
//! * fields are walked in wire order on both sides: names must match (allowing the renames of
//!   [`RENAMED_FIELDS`]); a field one side moved into a nested struct whose first field has
//!   the other side's name is entered; an `unused` field absorbs fields of the other side up
//!   to its size (a remainder that does not come out at exactly zero is an "unused size
//!   mismatch"); otherwise the first differing name ends the walk of that description. A
//!   destination whose fields end first is a problem, a source whose fields end first is not;
//!   destination fields are *not* skipped by version (the script compares them all);
//! * sizes of non-struct fields must be equal, nested descriptions are compared recursively,
//!   and every source subsection must exist in the destination (each destination subsection
//!   of that name is compared).
//!
//! Exit status: the number of problems, as the script's, but at most 100 (100 means 100 or
//! more; the script's own status wraps modulo 256). The script writes all of this to
//! standard output and nothing to standard error. Where it stops with a Python exception
//! (exit 1: a file that is not JSON, or a dump lacking a key or having the wrong JSON type
//! where the script reads one) we stop too: standard output holds the lines found so far,
//! standard error one line `vmstate: invalid input: …` naming the dump, section, description
//! and key (instead of a traceback), exit 101 (not 1, which would read as one problem). A file
//! that cannot be opened exits 103 where the script's argument parser exits 2 (`vmstate:
//! PATH: …` on standard error instead of its usage text); [`status_of_script`] maps the
//! script's statuses to ours. Known differences on inputs no QEMU writes: numbers must be JSON integers (the
//! script also compares floats and booleans), and JSON that Python reads but serde_json does
//! not (`NaN`, lone surrogates, integers beyond 64 bits, nesting deeper than 128) is refused
//! with exit 1; where the script fails in the middle of a line, that partial line is not
//! printed.

use serde_json::{Map, Value, json};
use std::fmt;
use std::path::Path;
use vmstate::schema::{Elem, Field, Kind, Vmsd};

/// Field (and description) names QEMU changed without changing the wire format, grouped by
/// the section or description name they occur in: within a group any two names are taken as
/// the same field (the allowances of the script, which also accepts two different names of
/// one group).
pub const RENAMED_FIELDS: &[(&str, &[&str])] = &[
    ("apic", &["timer", "timer_expiry"]),
    ("e1000", &["dev", "parent_obj"]),
    ("ehci", &["dev", "pcidev"]),
    ("I440FX", &["dev", "parent_obj"]),
    ("ich9_ahci", &["card", "parent_obj"]),
    ("ich9-ahci", &["ahci", "ich9_ahci"]),
    ("ioh3420", &["PCIDevice", "PCIEDevice"]),
    (
        "ioh-3240-express-root-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "cirrus_vga",
        &[
            "hw_cursor_x",
            "vga.hw_cursor_x",
            "hw_cursor_y",
            "vga.hw_cursor_y",
        ],
    ),
    ("lsiscsi", &["dev", "parent_obj"]),
    ("mch", &["d", "parent_obj"]),
    (
        "pci_bridge",
        &["bridge.dev", "parent_obj", "bridge.dev.shpc", "shpc"],
    ),
    ("pcnet", &["pci_dev", "parent_obj"]),
    ("PIIX3", &["pci_irq_levels", "pci_irq_levels_vmstate"]),
    (
        "piix4_pm",
        &[
            "dev",
            "parent_obj",
            "pci0_status",
            "acpi_pci_hotplug.acpi_pcihp_pci_status[0x0]",
            "pm1a.sts",
            "ar.pm1.evt.sts",
            "pm1a.en",
            "ar.pm1.evt.en",
            "pm1_cnt.cnt",
            "ar.pm1.cnt.cnt",
            "tmr.timer",
            "ar.tmr.timer",
            "tmr.overflow_time",
            "ar.tmr.overflow_time",
            "gpe",
            "ar.gpe",
        ],
    ),
    ("rtl8139", &["dev", "parent_obj"]),
    ("qxl", &["num_surfaces", "ssd.num_surfaces"]),
    (
        "usb-ccid",
        &["abProtocolDataStructure", "abProtocolDataStructure.data"],
    ),
    ("usb-host", &["dev", "parent_obj"]),
    ("usb-mouse", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("usb-tablet", &["usb-ptr-queue", "HIDPointerEventQueue"]),
    ("vmware_vga", &["card", "parent_obj"]),
    ("vmware_vga_internal", &["depth", "new_depth"]),
    ("xhci", &["pci_dev", "parent_obj"]),
    ("x3130-upstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-downstream-port",
        &[
            "port.br.dev",
            "parent_obj.parent_obj.parent_obj",
            "port.br.dev.exp.aer_log",
            "parent_obj.parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    ("xio3130-downstream", &["PCIDevice", "PCIEDevice"]),
    (
        "xio3130-express-upstream-port",
        &[
            "br.dev",
            "parent_obj.parent_obj",
            "br.dev.exp.aer_log",
            "parent_obj.parent_obj.exp.aer_log",
        ],
    ),
    (
        "spapr_pci",
        &[
            "dma_liobn[0]",
            "mig_liobn",
            "mem_win_addr",
            "mig_mem_win_addr",
            "mem_win_size",
            "mig_mem_win_size",
            "io_win_addr",
            "mig_io_win_addr",
            "io_win_size",
            "mig_io_win_size",
        ],
    ),
];

/// Sections QEMU renamed, as pairs: a source section missing in the destination is looked up
/// under its partner's name (the first pair naming it wins).
pub const RENAMED_SECTIONS: &[(&str, &str)] =
    &[("ICH9 LPC", "ICH9-LPC"), ("e1000-82540em", "e1000")];

/// Whether `a` and `b` name the same field (or description) inside `scope`.
fn same_name(scope: &str, a: &str, b: &str) -> bool {
    a == b
        || RENAMED_FIELDS
            .iter()
            .find(|(s, _)| *s == scope)
            .is_some_and(|(_, names)| names.contains(&a) && names.contains(&b))
}

/// The name a missing section is looked up under in the destination: its partner in
/// [`RENAMED_SECTIONS`], or the empty string (which the script then looks up as it is).
fn renamed_section(section: &str) -> &'static str {
    RENAMED_SECTIONS
        .iter()
        .find_map(|&(a, b)| {
            if a == section {
                Some(b)
            } else if b == section {
                Some(a)
            } else {
                None
            }
        })
        .unwrap_or("")
}

/// One problem between a source and a destination dump; its [`Display`](fmt::Display) is the
/// script's line for it (without the newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The section does not exist in the destination.
    MissingSection {
        /// Section name.
        section: String,
    },
    /// The source's version is newer than the destination's.
    Version {
        /// Section.
        section: String,
        /// Description (or the description holding the field), if not the section itself
        /// and not empty (the script omits an empty name).
        desc: Option<String>,
        /// Source version.
        src: i128,
        /// Destination version.
        dst: i128,
    },
    /// The source's version is below the destination's minimum (descriptions and fields; for
    /// a section see [`Finding::SectionMinimumVersion`]).
    MinimumVersion {
        /// Section.
        section: String,
        /// Description (or the description holding the field); never empty.
        desc: String,
        /// Source version.
        src: i128,
        /// Destination minimum version.
        dst_min: i128,
    },
    /// A key of the source's section or description is missing in the destination.
    EntryMissing {
        /// Section.
        section: String,
        /// Description, if not the section itself.
        desc: Option<String>,
        /// The key.
        entry: String,
    },
    /// The destination has a different description where the source has `expected`.
    DescriptionMismatch {
        /// Section.
        section: String,
        /// Source description name.
        expected: String,
        /// Destination description name.
        got: String,
    },
    /// A nested struct field of the source has no description in the destination.
    FieldDescriptionMissing {
        /// Section.
        section: String,
        /// Description.
        desc: String,
        /// Field.
        field: String,
    },
    /// Field names differ; the rest of the description was skipped.
    FieldMismatch {
        /// Section.
        section: String,
        /// Description.
        desc: String,
        /// The source's field.
        expected: String,
        /// The destination's field.
        got: String,
    },
    /// The destination's fields end before the source's.
    DestinationShort {
        /// Section.
        section: String,
        /// Description.
        desc: String,
        /// The source field with no counterpart.
        expected: String,
    },
    /// `unused` bytes do not cover whole fields on the other side.
    UnusedSizeMismatch {
        /// Section.
        section: String,
        /// Description.
        desc: String,
        /// The field where the sizes stopped adding up.
        near: String,
    },
    /// A field's size differs.
    Size {
        /// Section.
        section: String,
        /// Description (omitted from the line when empty).
        desc: String,
        /// Field (omitted from the line when empty).
        field: String,
        /// Source size.
        src: i128,
        /// Destination size.
        dst: i128,
    },
    /// A source subsection is not in the destination.
    MissingSubsection {
        /// Section.
        section: String,
        /// Description holding the subsection.
        desc: String,
        /// The subsection's name.
        subsection: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingSection { section } => {
                write!(f, "Section \"{section}\" does not exist in dest")
            }
            Problem::Version {
                section,
                desc,
                src,
                dst,
            } => {
                write!(f, "Section \"{section}\" ")?;
                if let Some(desc) = desc {
                    write!(f, "Description \"{desc}\": ")?;
                }
                write!(f, "version error: {src} > {dst}")
            }
            Problem::MinimumVersion {
                section,
                desc,
                src,
                dst_min,
            } => write!(
                f,
                "Section \"{section}\" Description \"{desc}\": minimum version error: \
                 {src} < {dst_min}"
            ),
            Problem::EntryMissing {
                section,
                desc: None,
                entry,
            } => write!(f, "Section \"{section}\": Entry \"{entry}\" missing"),
            Problem::EntryMissing {
                section,
                desc: Some(desc),
                entry,
            } => write!(
                f,
                "Section \"{section}\" Description \"{desc}\": Entry \"{entry}\" missing"
            ),
            Problem::DescriptionMismatch {
                section,
                expected,
                got,
            } => write!(
                f,
                "Section \"{section}\": Description \"{expected}\" missing, got \"{got}\" \
                 instead; skipping"
            ),
            Problem::FieldDescriptionMissing {
                section,
                desc,
                field,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\", Field \"{field}\": missing \
                 description"
            ),
            Problem::FieldMismatch {
                section,
                desc,
                expected,
                got,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\": expected field \"{expected}\", \
                 got \"{got}\"; skipping rest"
            ),
            Problem::DestinationShort {
                section,
                desc,
                expected,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\": expected field \"{expected}\", \
                 while dest has no further fields"
            ),
            // The script's line has a space between the opening quote and the field name.
            Problem::UnusedSizeMismatch {
                section,
                desc,
                near,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\": unused size mismatch near \" \
                 {near}\""
            ),
            Problem::Size {
                section,
                desc,
                field,
                src,
                dst,
            } => {
                write!(f, "Section \"{section}\" ")?;
                if !desc.is_empty() {
                    write!(f, "Description \"{desc}\" ")?;
                }
                if !field.is_empty() {
                    write!(f, "Field \"{field}\" ")?;
                }
                write!(f, "size mismatch: {src} , {dst}")
            }
            Problem::MissingSubsection {
                section,
                desc,
                subsection,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\": Subsection \"{subsection}\" not \
                 found"
            ),
        }
    }
}

/// Something the check reports, in the order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A problem: one line, counted in the exit status.
    Problem(Problem),
    /// The dumps name different machine types: one line, not counted.
    MachineTypes {
        /// The source's machine type.
        src: String,
        /// The destination's machine type.
        dst: String,
    },
    /// A section's (or a description's with an empty name) version is below the
    /// destination's minimum. The script prints only `Section "NAME" ` for it, without a
    /// newline and without counting it; the versions are kept here for callers.
    SectionMinimumVersion {
        /// Section.
        section: String,
        /// Source version.
        src: i128,
        /// Destination minimum version.
        dst_min: i128,
    },
}

impl fmt::Display for Finding {
    /// The finding's text exactly as the script prints it (lines end with a newline; a
    /// section's minimum-version error has none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Problem(p) => writeln!(f, "{p}"),
            Finding::MachineTypes { src, dst } => writeln!(
                f,
                "Warning: checking incompatible machine types: \"{src}\", \"{dst}\""
            ),
            Finding::SectionMinimumVersion { section, .. } => write!(f, "Section \"{section}\" "),
        }
    }
}

/// The result of comparing two dumps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Everything found, in the order the script prints it.
    pub findings: Vec<Finding>,
    /// Set when a dump lacks a key (or has the wrong JSON type) where the check reads one:
    /// the check stopped there, as the script does with an exception. Says where and what.
    pub malformed: Option<String>,
}

impl Report {
    /// The counted problems, in order.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.findings.iter().filter_map(|f| match f {
            Finding::Problem(p) => Some(p),
            _ => None,
        })
    }

    /// The script's exit status: the number of problems, at most 255; 1 when the check stopped
    /// on a malformed dump (the script's exit status for an exception). `vmstate`'s own is
    /// [`Outcome::status`].
    pub fn exit_status(&self) -> i32 {
        if self.malformed.is_some() {
            return 1;
        }
        self.problems().count().min(255) as i32
    }

    /// The script's standard output for this comparison.
    pub fn text(&self) -> String {
        self.findings.iter().map(ToString::to_string).collect()
    }
}

/// Which dump, and where in it: the context of a malformed-dump message.
#[derive(Clone, Copy)]
struct At<'a> {
    dump: &'static str,
    section: &'a str,
    desc: Option<&'a str>,
    field: Option<&'a str>,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dump", self.dump)?;
        if !self.section.is_empty() {
            write!(f, ", section \"{}\"", self.section)?;
        }
        if let Some(d) = self.desc {
            write!(f, ", description \"{d}\"")?;
        }
        if let Some(x) = self.field {
            write!(f, ", field \"{x}\"")?;
        }
        Ok(())
    }
}

impl<'a> At<'a> {
    fn top(dump: &'static str) -> Self {
        At {
            dump,
            section: "",
            desc: None,
            field: None,
        }
    }
    fn section(self, section: &'a str) -> Self {
        At { section, ..self }
    }
    fn desc(self, desc: &'a str) -> Self {
        At {
            desc: Some(desc),
            field: None,
            ..self
        }
    }
    fn field(self, field: &'a str) -> Self {
        At {
            field: Some(field),
            ..self
        }
    }

    fn object(self, v: &Value) -> Result<&Map<String, Value>, String> {
        v.as_object()
            .ok_or_else(|| format!("{self}: expected a JSON object, found {}", kind(v)))
    }

    fn key<'v>(self, v: &'v Value, key: &str) -> Result<&'v Value, String> {
        self.object(v)?
            .get(key)
            .ok_or_else(|| format!("{self}: no key \"{key}\""))
    }

    fn int(self, v: &Value, key: &str) -> Result<i128, String> {
        let x = self.key(v, key)?;
        integer(x)
            .ok_or_else(|| format!("{self}: \"{key}\": expected an integer, found {}", kind(x)))
    }

    fn str<'v>(self, v: &'v Value, key: &str) -> Result<&'v str, String> {
        let x = self.key(v, key)?;
        x.as_str()
            .ok_or_else(|| format!("{self}: \"{key}\": expected a string, found {}", kind(x)))
    }

    fn list<'v>(self, v: &'v Value, key: &str) -> Result<&'v [Value], String> {
        v.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| format!("{self}: \"{key}\": expected a list, found {}", kind(v)))
    }
}

fn integer(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One side's walk through a field list, with the lists it descended from.
struct Walk<'v> {
    current: std::slice::Iter<'v, Value>,
    outer: Vec<std::slice::Iter<'v, Value>>,
    item: Option<&'v Value>,
    /// Whether the next round takes a new item from this side.
    advance: bool,
}

/// What [`Walk::step`] did.
enum Step {
    /// A new item.
    Item,
    /// The nested list ended; back in the enclosing one.
    Ascended,
    /// The top-level list ended.
    End,
}

impl<'v> Walk<'v> {
    fn new(fields: &'v [Value]) -> Self {
        Walk {
            current: fields.iter(),
            outer: Vec::new(),
            item: None,
            advance: true,
        }
    }

    fn step(&mut self) -> Step {
        if let Some(v) = self.current.next() {
            self.item = Some(v);
            return Step::Item;
        }
        match self.outer.pop() {
            Some(up) => {
                self.current = up;
                Step::Ascended
            }
            None => Step::End,
        }
    }

    fn descend(&mut self, fields: &'v [Value]) {
        let up = std::mem::replace(&mut self.current, fields.iter());
        self.outer.push(up);
    }
}

const SRC: &str = "source";
const DST: &str = "destination";

struct Checker {
    findings: Vec<Finding>,
}

type Checked = Result<(), String>;

impl Checker {
    fn problem(&mut self, p: Problem) {
        self.findings.push(Finding::Problem(p));
    }

    /// Version and minimum version of `s` against `d`; `desc` is `None` for a section.
    fn version(
        &mut self,
        s: &Value,
        d: &Value,
        section: &str,
        desc: Option<&str>,
        at: (At, At),
    ) -> Checked {
        let sv = at.0.int(s, "version_id")?;
        let dv = at.1.int(d, "version_id")?;
        let desc = desc.filter(|d| !d.is_empty());
        if sv > dv {
            self.problem(Problem::Version {
                section: section.into(),
                desc: desc.map(Into::into),
                src: sv,
                dst: dv,
            });
        }
        if at.1.object(d)?.contains_key("minimum_version_id") {
            let min = at.1.int(d, "minimum_version_id")?;
            if sv < min {
                self.findings.push(match desc {
                    Some(desc) => Finding::Problem(Problem::MinimumVersion {
                        section: section.into(),
                        desc: desc.into(),
                        src: sv,
                        dst_min: min,
                    }),
                    None => Finding::SectionMinimumVersion {
                        section: section.into(),
                        src: sv,
                        dst_min: min,
                    },
                });
            }
        }
        Ok(())
    }

    fn sections(&mut self, src: &Value, dst: &Value) -> Checked {
        let (s_at, d_at) = (At::top(SRC), At::top(DST));
        for (section, s) in s_at.object(src)? {
            // (An empty source never looks at the destination.)
            let dst = d_at.object(dst)?;
            let d = match dst.get(section) {
                Some(d) => d,
                None => match dst.get(renamed_section(section)) {
                    Some(d) => d,
                    None => {
                        self.problem(Problem::MissingSection {
                            section: section.clone(),
                        });
                        continue;
                    }
                },
            };
            let at = (s_at.section(section), d_at.section(section));
            if section == "vmschkmachine" {
                let (a, b) = (at.0.str(s, "Name")?, at.1.str(d, "Name")?);
                if a != b {
                    self.findings.push(Finding::MachineTypes {
                        src: a.into(),
                        dst: b.into(),
                    });
                }
                continue;
            }
            self.version(s, d, section, None, at)?;
            let d_entries = at.1.object(d)?;
            for (entry, value) in at.0.object(s)? {
                let Some(dv) = d_entries.get(entry) else {
                    self.problem(Problem::EntryMissing {
                        section: section.clone(),
                        desc: None,
                        entry: entry.clone(),
                    });
                    continue;
                };
                if entry == "Description" {
                    self.descriptions(value, dv, section, at)?;
                }
            }
        }
        Ok(())
    }

    fn descriptions(&mut self, s: &Value, d: &Value, section: &str, at: (At, At)) -> Checked {
        let name = at.0.str(s, "name")?;
        self.version(
            s,
            d,
            section,
            Some(name),
            (at.0.desc(name), at.1.desc(name)),
        )?;
        let d_name = at.1.str(d, "name")?;
        let at = (at.0.desc(name), at.1.desc(d_name));
        if !same_name(section, name, d_name) {
            self.problem(Problem::DescriptionMismatch {
                section: section.into(),
                expected: name.into(),
                got: d_name.into(),
            });
            return Ok(());
        }
        let d_entries = at.1.object(d)?;
        for (entry, value) in at.0.object(s)? {
            let Some(dv) = d_entries.get(entry) else {
                self.problem(Problem::EntryMissing {
                    section: section.into(),
                    desc: Some(name.into()),
                    entry: entry.clone(),
                });
                continue;
            };
            match entry.as_str() {
                "Fields" => self.fields(value, dv, name, section, at)?,
                "Subsections" => self.subsections(value, dv, name, section, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn subsections(
        &mut self,
        s: &Value,
        d: &Value,
        desc: &str,
        section: &str,
        at: (At, At),
    ) -> Checked {
        for sub in at.0.list(s, "Subsections")? {
            let name = at.0.str(sub, "name")?;
            let mut found = false;
            for dsub in at.1.list(d, "Subsections")? {
                if at.1.str(dsub, "name")? != name {
                    continue;
                }
                found = true;
                self.descriptions(sub, dsub, section, at)?;
            }
            if !found {
                self.problem(Problem::MissingSubsection {
                    section: section.into(),
                    desc: desc.into(),
                    subsection: name.into(),
                });
            }
        }
        Ok(())
    }

    /// Walks both field lists in wire order, as the script does (see the module docs).
    fn fields(&mut self, s: &Value, d: &Value, desc: &str, section: &str, at: (At, At)) -> Checked {
        let mut src = Walk::new(at.0.list(s, "Fields")?);
        let mut dst = Walk::new(at.1.list(d, "Fields")?);
        // Bytes of an `unused` field still to be matched by the other side's fields.
        let mut unused: i128 = 0;
        loop {
            if src.advance {
                match src.step() {
                    Step::Item => {}
                    Step::Ascended => continue,
                    Step::End => break,
                }
            } else if unused == 0 {
                src.advance = true;
            }
            if dst.advance {
                match dst.step() {
                    Step::Item => {}
                    Step::Ascended => {
                        src.advance = false;
                        continue;
                    }
                    Step::End => {
                        if let Some(si) = src.item {
                            let expected = at.0.str(si, "field")?;
                            self.problem(Problem::DestinationShort {
                                section: section.into(),
                                desc: desc.into(),
                                expected: expected.into(),
                            });
                        }
                        break;
                    }
                }
            } else if unused == 0 {
                dst.advance = true;
            }
            // Both sides have had an item since the first round.
            let (Some(si), Some(di)) = (src.item, dst.item) else {
                break;
            };
            if unused != 0 {
                // The side that stands still holds the `unused` field; the other side's items
                // are counted against it. (If neither stands still, compare as usual.)
                let holder = if !dst.advance {
                    Some((si, at.0, &mut dst))
                } else if !src.advance {
                    Some((di, at.1, &mut src))
                } else {
                    None
                };
                if let Some((item, item_at, holder)) = holder {
                    unused = unused
                        .checked_sub(item_at.int(item, "size")?)
                        .ok_or_else(|| format!("{item_at}: \"size\" out of range"))?;
                    if unused == 0 {
                        holder.advance = true;
                        continue;
                    }
                    if unused < 0 {
                        let near = item_at.str(item, "field")?;
                        self.problem(Problem::UnusedSizeMismatch {
                            section: section.into(),
                            desc: desc.into(),
                            near: near.into(),
                        });
                        break;
                    }
                    continue;
                }
            }
            let (sn, dn) = (at.0.str(si, "field")?, at.1.str(di, "field")?);
            let f_at = (at.0.field(sn), at.1.field(dn));
            if !same_name(desc, sn, dn) {
                // A field moved into a nested struct (same wire bytes): enter it.
                if let Some(inner) = moved_into(di, sn, f_at.1)? {
                    dst.descend(inner);
                    src.advance = false;
                    continue;
                }
                if let Some(inner) = moved_into(si, dn, f_at.0)? {
                    src.descend(inner);
                    dst.advance = false;
                    continue;
                }
                if sn == "unused" || dn == "unused" {
                    let (ss, ds) = (total_size(si, f_at.0)?, total_size(di, f_at.1)?);
                    if ss == ds {
                        continue;
                    }
                    if dn == "unused" {
                        dst.advance = false;
                        unused = ds - ss;
                    } else {
                        src.advance = false;
                        unused = ss - ds;
                    }
                    continue;
                }
                self.problem(Problem::FieldMismatch {
                    section: section.into(),
                    desc: desc.into(),
                    expected: sn.into(),
                    got: dn.into(),
                });
                break;
            }
            self.version(si, di, section, Some(desc), f_at)?;
            let s_nested = f_at.0.object(si)?.get("Description");
            if s_nested.is_none() {
                let (ss, ds) = (f_at.0.int(si, "size")?, f_at.1.int(di, "size")?);
                if ss != ds {
                    self.problem(Problem::Size {
                        section: section.into(),
                        desc: desc.into(),
                        field: sn.into(),
                        src: ss,
                        dst: ds,
                    });
                }
            }
            if let Some(sd) = s_nested {
                match f_at.1.object(di)?.get("Description") {
                    Some(dd) => self.descriptions(sd, dd, section, f_at)?,
                    None => self.problem(Problem::FieldDescriptionMissing {
                        section: section.into(),
                        desc: desc.into(),
                        field: sn.into(),
                    }),
                }
            }
        }
        Ok(())
    }
}

/// The nested field list of `item` if its first field is (a rename of) `name`: the item is a
/// struct that the other side's fields were moved into.
fn moved_into<'v>(item: &'v Value, name: &str, at: At<'_>) -> Result<Option<&'v [Value]>, String> {
    let Some(nested) = at.object(item)?.get("Description") else {
        return Ok(None);
    };
    let Some(fields) = at.object(nested)?.get("Fields") else {
        return Ok(None);
    };
    let fields = at.list(fields, "Fields")?;
    let Some(first) = fields.first() else {
        return Ok(None);
    };
    let scope = at.str(nested, "name")?;
    let first = at.str(first, "field")?;
    Ok(same_name(scope, first, name).then_some(fields))
}

/// A field's `size` times its `num` when it has one.
fn total_size(item: &Value, at: At) -> Result<i128, String> {
    let size = at.int(item, "size")?;
    if !at.object(item)?.contains_key("num") {
        return Ok(size);
    }
    size.checked_mul(at.int(item, "num")?)
        .ok_or_else(|| format!("{at}: \"size\" times \"num\" out of range"))
}

/// Compares two dumps: can a VM migrate from a QEMU that produced `src` to one that produced
/// `dst`? The same judgement as QEMU 10.0's vmstate-static-checker.py, see the module docs.
pub fn compare(src: &Value, dst: &Value) -> Report {
    let mut c = Checker {
        findings: Vec::new(),
    };
    let malformed = c.sections(src, dst).err();
    Report {
        findings: c.findings,
        malformed,
    }
}

/// Keeps only the sections of `dump` that `other` also has (and `vmschkmachine`): to compare a
/// partial export of our tables with a full QEMU dump in both directions.
pub fn restrict_to(dump: &Value, other: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in dump.as_object().into_iter().flatten() {
        if k == "vmschkmachine" || other.get(k).is_some() {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// What `vmstate static-check` writes and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output: the script's standard output.
    pub stdout: String,
    /// Standard error: empty when the script completes; one `vmstate: …` line where the
    /// script stops on an unreadable file (its exit 2) or invalid input (its exit 1).
    pub stderr: String,
    /// The exit status ([`crate::exit::Exit`]): the number of problems (100 for 100 or more),
    /// 103 for a file that cannot be read, 101 for input that is not a dump.
    pub status: u8,
}

/// `vmstate static-check`'s exit status for a run where the script exits `script` and stops
/// with an error (`stopped`: it wrote to standard error): the count up to 100; the script's 1
/// (an exception: not a dump) is 101 and its 2 (a file it cannot open) is 103.
pub fn status_of_script(script: u8, stopped: bool) -> u8 {
    use crate::exit::Exit;
    match (stopped, script) {
        (true, 2) => Exit::Unreadable.code(),
        (true, _) => Exit::Invalid.code(),
        (false, n) => Exit::Problems(usize::from(n)).code(),
    }
}

/// `vmstate static-check SRC DST [--reverse]`: compares the two `-dump-vmstate` files like
/// `python3 vmstate-static-checker.py -s SRC -d DST [--reverse]`.
pub fn run(src: &Path, dst: &Path, reverse: bool) -> Outcome {
    use crate::exit::Exit;
    const UNREADABLE: u8 = Exit::Unreadable.code();
    const INVALID: u8 = Exit::Invalid.code();
    let fail = |stderr: String, status: u8| Outcome {
        stdout: String::new(),
        stderr,
        status,
    };
    // Both files are opened before either is parsed, as the script's argument parser does.
    // (Read as any input: mapped, a pipe spooled, at most 64 MiB unless it is a stream, so
    // `/dev/zero` ends with an error instead of exhausting memory.)
    let open = |p: &Path| crate::input::Input::open_as(p, crate::input::Expect::StreamOrText);
    let (a, b) = match (open(src), open(dst)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => return fail(format!("vmstate: {}: {e}\n", src.display()), UNREADABLE),
        (_, Err(e)) => return fail(format!("vmstate: {}: {e}\n", dst.display()), UNREADABLE),
    };
    let parse = |bytes: &[u8], path: &Path| {
        serde_json::from_slice::<Value>(bytes)
            .map_err(|e| format!("vmstate: invalid input: {}: {e}\n", path.display()))
    };
    let parsed = (parse(a.bytes(), src), parse(b.bytes(), dst));
    for (input, path) in [(&a, src), (&b, dst)] {
        if let Err(e) = input.unchanged() {
            return fail(format!("vmstate: {}: {e}\n", path.display()), 2);
        }
    }
    let (a, b) = match parsed {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(e, INVALID),
    };
    let report = if reverse {
        compare(&b, &a)
    } else {
        compare(&a, &b)
    };
    Outcome {
        stdout: report.text(),
        stderr: report
            .malformed
            .as_ref()
            .map(|m| format!("vmstate: invalid input: {m}\n"))
            .unwrap_or_default(),
        status: if report.malformed.is_some() {
            INVALID
        } else {
            Exit::Problems(report.problems().count()).code()
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Exporter

/// `field->size` as QEMU declares it, which `-dump-vmstate` prints: not always the wire size.
fn field_size(f: &Field) -> usize {
    // `VMSTATE_UINT16_HACK` (fw_cfg's v1 `cur_offset`) declares an int32 read as be16.
    if f.json_type == Some("int32_as_uint16") {
        return 4;
    }
    match f.kind {
        Kind::Scalar(s) | Kind::Equal(s) => s.width(),
        Kind::Array { elem, .. } => elem.width(),
        Kind::Buffer { len } | Kind::Unused { len } => len,
        Kind::Struct { vmsd, .. } => vmsd.size,
        Kind::VArray { elem, .. } => match elem {
            Elem::Scalar(s) => s.width(),
            Elem::Struct(v) => v.size,
        },
        // VMSTATE_VBUFFER* leave `size` 0: the size comes from another field.
        Kind::VBuffer { .. } => 0,
        Kind::Validate { .. } => 0,
        Kind::NullPtr => 1,
    }
}

fn nested(f: &Field) -> Option<&'static Vmsd> {
    match f.kind {
        Kind::Struct { vmsd, .. } => Some(vmsd),
        Kind::VArray {
            elem: Elem::Struct(v),
            ..
        } => Some(v),
        _ => None,
    }
}

/// The `Description` object QEMU's `-dump-vmstate` writes for `vmsd`.
pub fn describe(vmsd: &Vmsd) -> Value {
    let fields: Vec<Value> = vmsd
        .fields
        .iter()
        // QEMU's dump skips VMSTATE_VALIDATE entries (VMS_MUST_EXIST): they are not migrated.
        .filter(|f| !matches!(f.kind, Kind::Validate { .. }))
        .map(|f| {
            let mut o = Map::new();
            o.insert("field".into(), json!(f.name));
            o.insert("version_id".into(), json!(f.since));
            o.insert("field_exists".into(), json!(f.exists.is_some()));
            o.insert("size".into(), json!(field_size(f)));
            if let Some(v) = nested(f) {
                o.insert("Description".into(), describe(v));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("name".into(), json!(vmsd.name));
    o.insert("version_id".into(), json!(vmsd.version_id));
    o.insert("minimum_version_id".into(), json!(vmsd.minimum_version_id));
    o.insert("Fields".into(), Value::Array(fields));
    if !vmsd.subsections.is_empty() {
        let subs = vmsd.subsections.iter().map(|s| describe(s.vmsd)).collect();
        o.insert("Subsections".into(), Value::Array(subs));
    }
    Value::Object(o)
}

/// Exports description tables as a `-dump-vmstate` JSON dump. QEMU keys each section by the
/// device's QOM type name (`isa-pcspk` for the vmsd `pcspk`), so each entry pairs that name
/// with its table; `vmschkmachine` is added when `machine` is given.
pub fn export(entries: &[(&str, &Vmsd)], machine: Option<&str>) -> Value {
    let mut out = Map::new();
    if let Some(m) = machine {
        out.insert("vmschkmachine".into(), json!({ "Name": m }));
    }
    for (name, v) in entries {
        out.insert(
            (*name).into(),
            json!({
                "Name": name,
                "version_id": v.version_id,
                "minimum_version_id": v.minimum_version_id,
                "Description": describe(v),
            }),
        );
    }
    Value::Object(out)
}

/// [`export`] with every section keyed by its vmsd name.
pub fn export_vmsds(vmsds: &[&Vmsd], machine: Option<&str>) -> Value {
    let entries: Vec<(&str, &Vmsd)> = vmsds.iter().map(|v| (v.name, *v)).collect();
    export(&entries, machine)
}

/// Compares our description tables (each with the QOM type name QEMU keys its dump by) with a
/// real QEMU `-dump-vmstate` in both directions, restricted to the sections we export:
/// `(ours → real, real → ours)`. Both empty means our tables can migrate to and from that QEMU.
pub fn check_tables(entries: &[(&str, &Vmsd)], real: &Value) -> (Report, Report) {
    let machine = real
        .get("vmschkmachine")
        .and_then(|m| m.get("Name"))
        .and_then(Value::as_str);
    let ours = export(entries, machine);
    let theirs = restrict_to(real, &ours);
    (compare(&ours, &theirs), compare(&theirs, &ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmstate::schema::Subsection;
    use vmstate::zerocopy::byteorder::big_endian::{U16, U32, U64};
    use vmstate::{assert_layout, field, struct_field};

    fn problems(r: &Report) -> Vec<Problem> {
        r.problems().cloned().collect()
    }

    fn real_dump() -> Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../host-tests/fixtures/pc-7.2.dump-vmstate.json"
        );
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn a_real_dump_against_itself_has_no_problem() {
        let d = real_dump();
        assert!(d.as_object().unwrap().len() > 200);
        let r = compare(&d, &d);
        assert_eq!(r, Report::default());
        assert_eq!(r.exit_status(), 0);
    }

    fn edit(d: &mut Value, section: &str, f: impl FnOnce(&mut Value)) {
        f(d.get_mut(section).unwrap());
    }

    #[test]
    fn deliberate_changes_show_the_expected_problems() {
        let src = real_dump();
        // A newer source rtc (version 4): the destination cannot load it.
        let mut dst = src.clone();
        edit(&mut dst, "mc146818rtc", |s| {
            s["version_id"] = json!(2);
            s["Description"]["version_id"] = json!(2);
        });
        let r = compare(&src, &dst);
        assert_eq!(
            r.text(),
            "Section \"mc146818rtc\" version error: 3 > 2\n\
             Section \"mc146818rtc\" Description \"mc146818rtc\": version error: 3 > 2\n"
        );
        assert_eq!(r.exit_status(), 2);
        // Destination requires a newer minimum.
        let mut dst = src.clone();
        edit(&mut dst, "hpet", |s| {
            s["Description"]["minimum_version_id"] = json!(3)
        });
        assert_eq!(
            problems(&compare(&src, &dst)),
            [Problem::MinimumVersion {
                section: "hpet".into(),
                desc: "hpet".into(),
                src: 2,
                dst_min: 3
            }]
        );
        // A field renamed, a size changed, a subsection dropped, a section removed.
        let mut dst = src.clone();
        edit(&mut dst, "port92", |s| {
            s["Description"]["Fields"][0]["field"] = json!("outport_renamed")
        });
        edit(&mut dst, "hpet", |s| {
            s["Description"]["Fields"][0]["size"] = json!(4);
            s["Description"]["Subsections"]
                .as_array_mut()
                .unwrap()
                .remove(1);
        });
        dst.as_object_mut().unwrap().remove("isa-pcspk");
        let r = compare(&src, &dst);
        let text = r.text();
        assert!(text.contains(
            "Section \"port92\", Description \"port92\": expected field \"outport\", got \
             \"outport_renamed\"; skipping rest\n"
        ));
        assert!(text.contains(
            "Section \"hpet\" Description \"hpet\" Field \"config\" size mismatch: 8 , 4\n"
        ));
        assert!(text.contains(
            "Section \"hpet\", Description \"hpet\": Subsection \"hpet/offset\" not found\n"
        ));
        assert!(text.contains("Section \"isa-pcspk\" does not exist in dest\n"));
        assert_eq!(r.exit_status(), 4, "{text}");
        // Different machine types only warn.
        let mut dst = src.clone();
        dst["vmschkmachine"]["Name"] = json!("pc-i440fx-7.1");
        let r = compare(&src, &dst);
        assert_eq!(r.exit_status(), 0);
        assert_eq!(
            r.findings,
            [Finding::MachineTypes {
                src: "pc-i440fx-7.2".into(),
                dst: "pc-i440fx-7.1".into()
            }]
        );
    }

    fn fields(list: &[(&str, u64)]) -> Value {
        Value::Array(
            list.iter()
                .map(
                    |(n, s)| json!({"field": n, "version_id": 0, "field_exists": false, "size": s}),
                )
                .collect(),
        )
    }

    fn one(fields: Value) -> Value {
        json!({"d": {"Name": "d", "version_id": 1, "minimum_version_id": 1,
            "Description": {"name": "d", "version_id": 1, "minimum_version_id": 1, "Fields": fields}}})
    }

    #[test]
    fn unused_absorbs_whole_fields_of_the_same_size() {
        let a = one(fields(&[("a", 1), ("b", 4), ("c", 4), ("z", 2)]));
        let b = one(fields(&[("a", 1), ("unused", 8), ("z", 2)]));
        assert_eq!(problems(&compare(&a, &b)), []);
        assert_eq!(problems(&compare(&b, &a)), []);
        let c = one(fields(&[("a", 1), ("unused", 6), ("z", 2)]));
        assert_eq!(
            problems(&compare(&a, &c)),
            [Problem::UnusedSizeMismatch {
                section: "d".into(),
                desc: "d".into(),
                near: "c".into()
            }]
        );
        let short = one(fields(&[("a", 1)]));
        assert_eq!(
            compare(&a, &short).text(),
            "Section \"d\", Description \"d\": expected field \"b\", while dest has no further \
             fields\n"
        );
    }

    #[test]
    fn a_field_moved_into_a_nested_struct_matches() {
        let a = one(fields(&[("x", 4), ("y", 4), ("z", 1)]));
        let b = one(json!([
            {"field": "inner", "version_id": 0, "field_exists": false, "size": 8,
             "Description": {"name": "inner", "version_id": 1, "minimum_version_id": 1,
                             "Fields": fields(&[("x", 4), ("y", 4)])}},
            {"field": "z", "version_id": 0, "field_exists": false, "size": 1}
        ]));
        assert_eq!(problems(&compare(&a, &b)), []);
        assert_eq!(problems(&compare(&b, &a)), []);
    }

    // A small device table for the exporter.
    #[repr(C)]
    struct Timer {
        expire: U64,
        enabled: u8,
    }
    #[repr(C)]
    struct Small {
        mode: u8,
        pad: [u8; 3],
        count: U16,
        timer: Timer,
        extra: U16,
    }
    const TIMER: Vmsd =
        Vmsd::new("small_timer", 1, 1, 9).fields(&[field!(Timer, expire), field!(Timer, enabled)]);
    const EXTRA: Vmsd = Vmsd::new("small/extra", 1, 1, 17).fields(&[field!(Small, extra)]);
    const SMALL_FIELDS: &[Field] = &[
        field!(Small, mode),
        field!(Small, pad).unused(),
        field!(Small, count).since(3),
        struct_field!(Small, timer, TIMER),
    ];
    const SMALL: Vmsd = Vmsd::new("small", 3, 2, 17)
        .fields(SMALL_FIELDS)
        .subsections(&[Subsection::new(&EXTRA, extra_needed)]);

    fn extra_needed(state: &[u8]) -> bool {
        state.get(15..17) != Some(&[0, 0])
    }
    assert_layout!(Small, SMALL);

    #[test]
    fn export_writes_qemu_dump_json() {
        let v = export_vmsds(&[&SMALL], Some("pc-i440fx-7.2"));
        let expected = json!({
            "vmschkmachine": {"Name": "pc-i440fx-7.2"},
            "small": {"Name": "small", "version_id": 3, "minimum_version_id": 2, "Description": {
                "name": "small", "version_id": 3, "minimum_version_id": 2,
                "Fields": [
                    {"field": "mode", "version_id": 0, "field_exists": false, "size": 1},
                    {"field": "unused", "version_id": 0, "field_exists": false, "size": 3},
                    {"field": "count", "version_id": 3, "field_exists": false, "size": 2},
                    {"field": "timer", "version_id": 0, "field_exists": false, "size": 9,
                     "Description": {"name": "small_timer", "version_id": 1, "minimum_version_id": 1,
                        "Fields": [
                            {"field": "expire", "version_id": 0, "field_exists": false, "size": 8},
                            {"field": "enabled", "version_id": 0, "field_exists": false, "size": 1}
                        ]}}
                ],
                "Subsections": [{"name": "small/extra", "version_id": 1, "minimum_version_id": 1,
                    "Fields": [{"field": "extra", "version_id": 0, "field_exists": false, "size": 2}]}]
            }}
        });
        assert_eq!(v, expected);
        assert_eq!(problems(&compare(&v, &v)), []);
        // An older build without the subsection and at version 2 cannot take ours.
        const OLD_FIELDS: &[Field] = &[
            field!(Small, mode),
            field!(Small, pad).unused(),
            struct_field!(Small, timer, TIMER),
        ];
        const OLD: Vmsd = Vmsd::new("small", 2, 2, 17).fields(OLD_FIELDS);
        let old = export(&[("small", &OLD)], Some("pc-i440fx-7.2"));
        let text = compare(&v, &old).text();
        assert_eq!(
            text,
            "Section \"small\" version error: 3 > 2\n\
             Section \"small\" Description \"small\": version error: 3 > 2\n\
             Section \"small\", Description \"small\": expected field \"count\", got \"timer\"; \
             skipping rest\n\
             Section \"small\" Description \"small\": Entry \"Subsections\" missing\n"
        );
        // The other way the script compares every destination field, also those newer than
        // the source's version: the new `count` stands where the old stream has `timer`.
        assert_eq!(
            compare(&old, &v).text(),
            "Section \"small\", Description \"small\": expected field \"timer\", got \"count\"; \
             skipping rest\n"
        );
    }

    // QEMU 7.2's mc146818rtc as a table over a wire-layout struct, to check our tables against
    // the real dump (the devices crate has the real model).
    #[repr(C)]
    struct Rtc {
        cmos_data: [u8; 128],
        cmos_index: u8,
        unused1: [u8; 28],
        periodic_timer: U64,
        next_periodic_time: U64,
        unused2: [u8; 24],
        irq_coalesced: U32,
        period: U32,
        base_rtc: U64,
        last_update: U64,
        offset: U64,
        update_timer: U64,
        next_alarm_time: U64,
        irq_reinject_on_ack_count: U16,
    }
    const RTC_SIZE: usize = core::mem::size_of::<Rtc>();
    const RTC_FIELDS: &[Field] = &[
        field!(Rtc, cmos_data),
        field!(Rtc, cmos_index),
        field!(Rtc, unused1).unused(),
        field!(Rtc, periodic_timer).timer(),
        field!(Rtc, next_periodic_time),
        field!(Rtc, unused2).unused(),
        field!(Rtc, irq_coalesced).since(2),
        field!(Rtc, period).since(2),
        field!(Rtc, base_rtc).since(3),
        field!(Rtc, last_update).since(3),
        field!(Rtc, offset).since(3),
        field!(Rtc, update_timer).since(3).timer(),
        field!(Rtc, next_alarm_time).since(3),
    ];
    const REINJECT_FIELDS: &[Field] = &[field!(Rtc, irq_reinject_on_ack_count)];
    const REINJECT: Vmsd =
        Vmsd::new("mc146818rtc/irq_reinject_on_ack_count", 1, 1, RTC_SIZE).fields(REINJECT_FIELDS);
    fn reinject_needed(state: &[u8]) -> bool {
        state.get(RTC_SIZE - 2..) != Some(&[0, 0])
    }
    const RTC: Vmsd = Vmsd::new("mc146818rtc", 3, 1, RTC_SIZE)
        .fields(RTC_FIELDS)
        .subsections(&[Subsection::new(&REINJECT, reinject_needed)]);
    assert_layout!(Rtc, RTC);

    #[repr(C)]
    struct Pcspk {
        data_on: u8,
        dummy_refresh_clock: u8,
    }
    const PCSPK_FIELDS: &[Field] = &[field!(Pcspk, data_on), field!(Pcspk, dummy_refresh_clock)];
    const PCSPK: Vmsd = Vmsd::new("pcspk", 1, 1, 2).fields(PCSPK_FIELDS);
    assert_layout!(Pcspk, PCSPK);

    #[test]
    fn our_tables_against_a_real_dump_both_ways() {
        let real = real_dump();
        let (there, back) = check_tables(&[("mc146818rtc", &RTC), ("isa-pcspk", &PCSPK)], &real);
        assert_eq!(there, Report::default(), "{}", there.text());
        assert_eq!(back, Report::default(), "{}", back.text());
        // A deliberately changed table: `period` narrowed to 16 bits.
        const BAD_FIELDS: &[Field] = &[
            field!(Rtc, cmos_data),
            field!(Rtc, cmos_index),
            field!(Rtc, unused1).unused(),
            field!(Rtc, periodic_timer).timer(),
            field!(Rtc, next_periodic_time),
            field!(Rtc, unused2).unused(),
            field!(Rtc, irq_coalesced).since(2),
            field!(Rtc, irq_reinject_on_ack_count)
                .since(2)
                .named("period"),
        ];
        const BAD: Vmsd = Vmsd::new("mc146818rtc", 3, 1, RTC_SIZE)
            .fields(BAD_FIELDS)
            .subsections(&[Subsection::new(&REINJECT, reinject_needed)]);
        let (there, back) = check_tables(&[("mc146818rtc", &BAD)], &real);
        assert_eq!(
            there.text(),
            "Section \"mc146818rtc\" Description \"mc146818rtc\" Field \"period\" size \
             mismatch: 2 , 4\n"
        );
        assert_eq!(
            back.text(),
            "Section \"mc146818rtc\" Description \"mc146818rtc\" Field \"period\" size \
             mismatch: 4 , 2\n\
             Section \"mc146818rtc\", Description \"mc146818rtc\": expected field \
             \"base_rtc\", while dest has no further fields\n"
        );
    }

    #[test]
    fn restrict_keeps_common_sections() {
        let real = real_dump();
        let ours = json!({"vmschkmachine": {"Name": "pc-i440fx-7.2"},
            "port92": real["port92"].clone()});
        let r = restrict_to(&real, &ours);
        assert_eq!(r.as_object().unwrap().len(), 2);
        assert_eq!(problems(&compare(&r, &ours)), []);
        assert_eq!(problems(&compare(&ours, &r)), []);
    }
}
