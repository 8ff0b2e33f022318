//! Static migration-compatibility check between two `-dump-vmstate` JSON dumps, with the rules
//! of QEMU's `scripts/vmstate-static-checker.py` (reimplemented, not copied), and an exporter
//! that writes our own description tables in the same JSON so they can be compared with a real
//! QEMU dump.
//!
//! A dump is an object keyed by section (vmsd) name; each section has `Name`, `version_id`,
//! `minimum_version_id` and a `Description` (`name`, `version_id`, `minimum_version_id`,
//! `Fields`, optional `Subsections`); each field has `field`, `version_id`, `field_exists`,
//! `size` and, for nested structs, a `Description`. The special section `vmschkmachine` names the
//! machine type.
//!
//! Problems found, each counted once (the exit status is their number, at most 255):
//! * a source section missing in the destination;
//! * version errors (source `version_id` above the destination's) and minimum-version errors
//!   (source `version_id` below the destination's `minimum_version_id`), for sections,
//!   descriptions, nested descriptions, subsections and fields;
//! * a description entry (`Fields`, `Subsections`, …) present in the source but not in the
//!   destination;
//! * fields whose names differ (after allowing for `unused` bytes absorbing whole fields of the
//!   same total size on the other side, and for fields moved into a nested struct at the same
//!   wire position); the rest of that description is then skipped;
//! * size mismatches of non-struct fields;
//! * a destination that runs out of fields first;
//! * a source subsection the destination does not have.
//!
//! Differences from the script: destination fields whose `version_id` is above the source
//! description's version are skipped (a destination loads an older stream without them, so
//! they are not a problem); its per-QEMU-release tables of renamed fields and sections are
//! not carried (they describe QEMU's history, not these builds), and a section-level
//! minimum-version error is counted (the script prints nothing for it).

use serde_json::{Map, Value, json};
use std::fmt;
use vmstate::schema::{Elem, Field, Kind, Vmsd};

/// One problem between a source and a destination dump.
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
        /// Description (or field) the versions belong to, if not the section itself.
        desc: Option<String>,
        /// Source version.
        src: u64,
        /// Destination version.
        dst: u64,
    },
    /// The source's version is below the destination's minimum.
    MinimumVersion {
        /// Section.
        section: String,
        /// Description (or field), if not the section itself.
        desc: Option<String>,
        /// Source version.
        src: u64,
        /// Destination minimum version.
        dst_min: u64,
    },
    /// An entry of the source's description is missing in the destination.
    EntryMissing {
        /// Section.
        section: String,
        /// Description, if not the section itself.
        desc: Option<String>,
        /// The entry's key.
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
        /// Description.
        desc: String,
        /// Field.
        field: String,
        /// Source size.
        src: u64,
        /// Destination size.
        dst: u64,
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
        let d = |desc: &Option<String>| match desc {
            Some(x) => format!(" Description \"{x}\":"),
            None => String::new(),
        };
        match self {
            Problem::MissingSection { section } => {
                write!(f, "Section \"{section}\" does not exist in dest")
            }
            Problem::Version {
                section,
                desc,
                src,
                dst,
            } => write!(
                f,
                "Section \"{section}\"{} version error: {src} > {dst}",
                d(desc)
            ),
            Problem::MinimumVersion {
                section,
                desc,
                src,
                dst_min,
            } => write!(
                f,
                "Section \"{section}\"{} minimum version error: {src} < {dst_min}",
                d(desc)
            ),
            Problem::EntryMissing {
                section,
                desc,
                entry,
            } => write!(
                f,
                "Section \"{section}\"{} Entry \"{entry}\" missing",
                d(desc)
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
            Problem::UnusedSizeMismatch {
                section,
                desc,
                near,
            } => write!(
                f,
                "Section \"{section}\", Description \"{desc}\": unused size mismatch near \
                 \"{near}\""
            ),
            Problem::Size {
                section,
                desc,
                field,
                src,
                dst,
            } => write!(
                f,
                "Section \"{section}\" Description \"{desc}\" Field \"{field}\" size mismatch: \
                 {src} , {dst}"
            ),
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

/// The result of comparing two dumps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Problems, in the order found.
    pub problems: Vec<Problem>,
    /// Warnings that are not problems (different machine types).
    pub warnings: Vec<String>,
}

impl Report {
    /// The exit status: the number of problems, at most 255.
    pub fn exit_status(&self) -> i32 {
        self.problems.len().min(255) as i32
    }

    /// One line per warning and problem.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for w in &self.warnings {
            s.push_str(w);
            s.push('\n');
        }
        for p in &self.problems {
            s.push_str(&p.to_string());
            s.push('\n');
        }
        s
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

struct Checker {
    report: Report,
}

impl Checker {
    fn version(&mut self, s: &Value, d: &Value, section: &str, desc: Option<&str>) {
        let (sv, dv) = (num(s, "version_id"), num(d, "version_id"));
        if sv > dv {
            self.report.problems.push(Problem::Version {
                section: section.into(),
                desc: desc.map(Into::into),
                src: sv,
                dst: dv,
            });
        }
        if let Some(min) = d.get("minimum_version_id").and_then(Value::as_u64)
            && sv < min
        {
            self.report.problems.push(Problem::MinimumVersion {
                section: section.into(),
                desc: desc.map(Into::into),
                src: sv,
                dst_min: min,
            });
        }
    }

    fn descriptions(&mut self, s: &Value, d: &Value, section: &str) {
        let name = text(s, "name");
        self.version(s, d, section, Some(name));
        if name != text(d, "name") {
            self.report.problems.push(Problem::DescriptionMismatch {
                section: section.into(),
                expected: name.into(),
                got: text(d, "name").into(),
            });
            return;
        }
        let Some(entries) = s.as_object() else { return };
        for (key, value) in entries {
            let Some(dv) = d.get(key) else {
                self.report.problems.push(Problem::EntryMissing {
                    section: section.into(),
                    desc: Some(name.into()),
                    entry: key.clone(),
                });
                continue;
            };
            match key.as_str() {
                "Fields" => self.fields(value, dv, name, section, num(s, "version_id")),
                "Subsections" => self.subsections(value, dv, name, section),
                _ => {}
            }
        }
    }

    fn subsections(&mut self, s: &Value, d: &Value, desc: &str, section: &str) {
        let dst: &[Value] = d.as_array().map(Vec::as_slice).unwrap_or(&[]);
        for sub in s.as_array().into_iter().flatten() {
            match dst.iter().find(|x| text(x, "name") == text(sub, "name")) {
                Some(dsub) => self.descriptions(sub, dsub, section),
                None => self.report.problems.push(Problem::MissingSubsection {
                    section: section.into(),
                    desc: desc.into(),
                    subsection: text(sub, "name").into(),
                }),
            }
        }
    }

    /// Walks both field lists in wire order. Each side is a stack of cursors so a field that
    /// one side moved into a nested struct (same wire bytes) can be entered and left.
    fn fields(&mut self, s: &Value, d: &Value, desc: &str, section: &str, src_version: u64) {
        let mut src = Cursor::new(s);
        let mut dst = Cursor::new(d);
        while let Some(sf) = src.next() {
            // Destination fields newer than the source's version are not on the wire.
            let df = loop {
                match dst.next() {
                    Some(df) if num(df, "version_id") > src_version => continue,
                    other => break other,
                }
            };
            let Some(df) = df else {
                self.report.problems.push(Problem::DestinationShort {
                    section: section.into(),
                    desc: desc.into(),
                    expected: text(sf, "field").into(),
                });
                return;
            };
            let (sn, dn) = (text(sf, "field"), text(df, "field"));
            if sn != dn {
                if first_nested_field(df) == Some(sn) {
                    dst.enter(df);
                    src.unread(sf);
                    continue;
                }
                if first_nested_field(sf) == Some(dn) {
                    src.enter(sf);
                    dst.unread(df);
                    continue;
                }
                if sn == "unused" || dn == "unused" {
                    let (ss, ds) = (num(sf, "size"), num(df, "size"));
                    if ss == ds {
                        continue;
                    }
                    // The bigger side's unused bytes must be covered by whole fields of the
                    // other side.
                    let (mut left, other) = if dn == "unused" && ds > ss {
                        (ds - ss, &mut src)
                    } else if sn == "unused" && ss > ds {
                        (ss - ds, &mut dst)
                    } else {
                        let near = if dn == "unused" { sn } else { dn };
                        self.unused_mismatch(section, desc, near);
                        return;
                    };
                    while left > 0 {
                        let Some(next) = other.next() else {
                            self.unused_mismatch(section, desc, "");
                            return;
                        };
                        let size = num(next, "size");
                        if size > left {
                            self.unused_mismatch(section, desc, text(next, "field"));
                            return;
                        }
                        left -= size;
                    }
                    continue;
                }
                self.report.problems.push(Problem::FieldMismatch {
                    section: section.into(),
                    desc: desc.into(),
                    expected: sn.into(),
                    got: dn.into(),
                });
                return;
            }
            self.version(sf, df, section, Some(desc));
            match (sf.get("Description"), df.get("Description")) {
                (None, _) => {
                    let (ss, ds) = (num(sf, "size"), num(df, "size"));
                    if ss != ds {
                        self.report.problems.push(Problem::Size {
                            section: section.into(),
                            desc: desc.into(),
                            field: sn.into(),
                            src: ss,
                            dst: ds,
                        });
                    }
                }
                (Some(sd), Some(dd)) => self.descriptions(sd, dd, section),
                (Some(_), None) => self.report.problems.push(Problem::FieldDescriptionMissing {
                    section: section.into(),
                    desc: desc.into(),
                    field: sn.into(),
                }),
            }
        }
    }

    fn unused_mismatch(&mut self, section: &str, desc: &str, near: &str) {
        self.report.problems.push(Problem::UnusedSizeMismatch {
            section: section.into(),
            desc: desc.into(),
            near: near.into(),
        });
    }
}

fn first_nested_field(f: &Value) -> Option<&str> {
    f.get("Description")?
        .get("Fields")?
        .as_array()?
        .first()?
        .get("field")?
        .as_str()
}

/// A position in a field list with the enclosing lists it was entered from.
struct Cursor<'v> {
    stack: Vec<std::slice::Iter<'v, Value>>,
    pending: Option<&'v Value>,
}

impl<'v> Cursor<'v> {
    fn new(fields: &'v Value) -> Self {
        Cursor {
            stack: vec![fields.as_array().map(|a| a.iter()).unwrap_or_default()],
            pending: None,
        }
    }

    fn next(&mut self) -> Option<&'v Value> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                Some(v) => return Some(v),
                None => {
                    self.stack.pop();
                }
            }
        }
    }

    fn unread(&mut self, v: &'v Value) {
        self.pending = Some(v);
    }

    fn enter(&mut self, f: &'v Value) {
        if let Some(fields) = f
            .get("Description")
            .and_then(|d| d.get("Fields"))
            .and_then(Value::as_array)
        {
            self.stack.push(fields.iter());
        }
    }
}

/// Compares two dumps: can a VM migrate from a QEMU that produced `src` to one that produced
/// `dst`?
pub fn compare(src: &Value, dst: &Value) -> Report {
    let mut c = Checker {
        report: Report::default(),
    };
    let Some(sections) = src.as_object() else {
        return c.report;
    };
    for (name, s) in sections {
        let Some(d) = dst.get(name) else {
            c.report.problems.push(Problem::MissingSection {
                section: name.clone(),
            });
            continue;
        };
        if name == "vmschkmachine" {
            if text(s, "Name") != text(d, "Name") {
                c.report.warnings.push(format!(
                    "Warning: checking incompatible machine types: \"{}\", \"{}\"",
                    text(s, "Name"),
                    text(d, "Name")
                ));
            }
            continue;
        }
        c.version(s, d, name, None);
        for (key, value) in s.as_object().into_iter().flatten() {
            let Some(dv) = d.get(key) else {
                c.report.problems.push(Problem::EntryMissing {
                    section: name.clone(),
                    desc: None,
                    entry: key.clone(),
                });
                continue;
            };
            if key == "Description" {
                c.descriptions(value, dv, name);
            }
        }
    }
    c.report
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

/// The CLI entry point: `vmstate static-check --src A.json --dst B.json [--reverse]`. Returns
/// the text to print and the exit status (the number of problems, at most 255; 255 also when
/// a file cannot be read or parsed).
pub fn run(src: &std::path::Path, dst: &std::path::Path, reverse: bool) -> (String, i32) {
    let load = |p: &std::path::Path| -> Result<Value, String> {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (a, b) = match (load(src), load(dst)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return (format!("error: {e}\n"), 255),
    };
    let report = if reverse {
        compare(&b, &a)
    } else {
        compare(&a, &b)
    };
    (report.text(), report.exit_status())
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
            compare(&src, &dst).problems,
            [Problem::MinimumVersion {
                section: "hpet".into(),
                desc: Some("hpet".into()),
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
        assert_eq!(r.warnings.len(), 1);
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
        assert_eq!(compare(&a, &b).problems, []);
        assert_eq!(compare(&b, &a).problems, []);
        let c = one(fields(&[("a", 1), ("unused", 6), ("z", 2)]));
        assert_eq!(
            compare(&a, &c).problems,
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
        assert_eq!(compare(&a, &b).problems, []);
        assert_eq!(compare(&b, &a).problems, []);
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
        assert_eq!(compare(&v, &v).problems, []);
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
        assert_eq!(compare(&old, &v).problems, []);
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
        assert_eq!(compare(&r, &ours).problems, []);
        assert_eq!(compare(&ours, &r).problems, []);
    }
}
