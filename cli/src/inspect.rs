//! `vmstate inspect`: a human-readable map of a stream.
//!
//! On a terminal the columns are aligned and coloured; otherwise each record is one line of
//! tab-separated `key=value` cells, stable for scripts and diffs.

use crate::generic::Body;
use crate::model::{Item, Stream};
use std::collections::BTreeMap;
use std::fmt::Write;
use vmstate::ram::RamRecord;

/// Output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Pad columns to a common width.
    pub align: bool,
    /// Use ANSI colours.
    pub colour: bool,
}

impl Style {
    /// Plain output (not a terminal).
    pub const PLAIN: Style = Style {
        align: false,
        colour: false,
    };
    /// Terminal output.
    pub const TERMINAL: Style = Style {
        align: true,
        colour: true,
    };

    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Page counts of one RAM block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockPages {
    /// Length of the block in bytes.
    pub length: u64,
    /// ZERO records.
    pub zero: u64,
    /// PAGE records.
    pub normal: u64,
    /// XBZRLE records.
    pub xbzrle: u64,
}

/// Per-block page counts over all RAM sections, in block-list order.
pub fn ram_summary(stream: &Stream<'_>) -> Vec<(String, BlockPages)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, BlockPages> = BTreeMap::new();
    for e in &stream.entries {
        let Item::Ram { section, records } = &e.item else {
            continue;
        };
        let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Only START carries the block list, and its records are few; page counts were
        // taken while parsing, so the pages are not read again.
        if section.kind == vmstate::wire::section::SectionKind::Start {
            for r in records {
                if let RamRecord::MemSize(list) = r {
                    for b in list.iter() {
                        let n = name(b.name);
                        if !map.contains_key(&n) {
                            order.push(n.clone());
                        }
                        map.entry(n).or_default().length = b.length;
                    }
                }
            }
        }
        for c in records.counts() {
            let p = map.entry(name(c.block)).or_default();
            p.zero += c.zero;
            p.normal += c.page;
            p.xbzrle += c.xbzrle;
        }
    }
    order
        .into_iter()
        .map(|n| {
            let p = map.remove(&n).unwrap_or_default();
            (n, p)
        })
        .collect()
}

fn subsection_names(body: &Body<'_>, out: &mut Vec<String>) {
    for f in &body.fields {
        value_subsections(&f.value, out);
    }
    for s in &body.subsections {
        out.push(vmstate::Escaped(s.name.as_bytes()).to_string());
        subsection_names(&s.body, out);
    }
}

fn value_subsections(v: &crate::generic::Value<'_>, out: &mut Vec<String>) {
    match v {
        crate::generic::Value::Struct(b) => subsection_names(b, out),
        crate::generic::Value::Array(items) => items.iter().for_each(|i| value_subsections(i, out)),
        _ => {}
    }
}

/// Renders the map of `stream` (`name` is the file name shown in the first line).
pub fn render(stream: &Stream<'_>, name: &str, style: Style) -> String {
    let mut o = String::new();
    let head = |k: &str| style.paint("1", k);
    let _ = writeln!(o, "{} {name} ({} bytes)", head("file"), stream.len);
    let _ = writeln!(
        o,
        "{} at 0x00000000: magic QEVM, file version {}",
        head("header"),
        stream.version
    );
    match &stream.configuration {
        Some(c) => {
            let mut line = format!(
                "{} at 0x00000008: machine {}",
                head("configuration"),
                vmstate::Escaped(c.machine)
            );
            if let Some(b) = c.target_page_bits {
                let _ = write!(line, ", target-page-bits {b}");
            }
            if let Some(caps) = &c.capabilities {
                let names: Vec<String> = caps
                    .iter()
                    .map(|c| vmstate::Escaped(c).to_string())
                    .collect();
                let _ = write!(line, ", capabilities [{}]", names.join(", "));
            }
            if c.uuid.is_some() {
                line.push_str(", uuid");
            }
            let _ = writeln!(o, "{line}");
        }
        None => {
            let _ = writeln!(o, "{} none", head("configuration"));
        }
    }

    let header = [
        "offset", "kind", "id", "idstr", "instance", "version", "body", "detail",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for e in &stream.entries {
        let offset = format!("0x{:08x}", e.offset);
        let row = match &e.item {
            Item::Eof => [
                offset,
                "eof".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
            Item::Command(c) => [
                offset,
                "command".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                (c.payload.len() + c.packaged.len()).to_string(),
                format!("COMMAND {}", c.id.name()),
            ],
            Item::Ram { section, records } => {
                let (mut z, mut p, mut x) = (0, 0, 0);
                for c in records.counts() {
                    z += c.zero;
                    p += c.page;
                    x += c.xbzrle;
                }
                let mut blocks = 0;
                if section.kind == vmstate::wire::section::SectionKind::Start {
                    for r in records {
                        if let RamRecord::MemSize(l) = r {
                            blocks = l.count;
                        }
                    }
                }
                let mut detail = Vec::new();
                if blocks > 0 {
                    detail.push(format!("{blocks} blocks"));
                }
                if z + p + x > 0 {
                    detail.push(format!("{z} zero, {p} normal pages"));
                }
                if x > 0 {
                    detail.push(format!("{x} xbzrle"));
                }
                section_row(offset, section, detail.join(", "))
            }
            Item::Device { section, body, .. } => {
                let mut subs = Vec::new();
                subsection_names(body, &mut subs);
                let detail = if subs.is_empty() {
                    String::new()
                } else {
                    format!("subsections: {}", subs.join(", "))
                };
                section_row(offset, section, detail)
            }
            Item::Opaque { section, .. } => {
                section_row(offset, section, "no description: body not decoded".into())
            }
        };
        rows.push(row);
    }
    let mut width = header.map(str::len);
    if style.align {
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: &[String; 8], o: &mut String, title: bool| {
        let mut parts = Vec::new();
        // No padding after the last non-empty cell (colour codes would keep it from trimming).
        let last = cells.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
        for (i, c) in cells.iter().enumerate().take(last + 1) {
            if style.align {
                let padded = if i == last && !(i == 2 || i == 4 || i == 5 || i == 6) {
                    c.clone()
                } else if i == 2 || i == 4 || i == 5 || i == 6 {
                    format!("{c:>w$}", w = width[i])
                } else {
                    format!("{c:<w$}", w = width[i])
                };
                let code = match (title, i) {
                    (true, _) => "1",
                    (false, 0) => "2",
                    (false, 1) => "36",
                    (false, 3) => "33",
                    _ => "",
                };
                parts.push(if code.is_empty() {
                    padded
                } else {
                    style.paint(code, &padded)
                });
            } else if !c.is_empty() {
                parts.push(format!("{}={c}", header[i]));
            }
        }
        let sep = if style.align { "  " } else { "\t" };
        let _ = writeln!(o, "{}", parts.join(sep).trim_end());
    };
    let _ = writeln!(o);
    if style.align {
        line(&header.map(String::from), &mut o, true);
    }
    for r in &rows {
        line(r, &mut o, false);
    }
    if let Some(u) = &stream.unmeasured {
        let _ = writeln!(
            o,
            "{} at 0x{:08x}: section {} cannot be measured (no section footers, no \
             VMDESCRIPTION trailer, no typed model): the map stops here, {} bytes before the end",
            head("stop"),
            u.offset,
            u.section,
            stream.len - u.offset
        );
    }
    if let Some(json) = stream.trailer {
        let devices = stream.description.as_ref().map_or(0, |d| d.devices.len());
        let _ = writeln!(
            o,
            "{} VMDESCRIPTION at 0x{:08x}: {} bytes of JSON, {devices} devices",
            head("trailer"),
            stream.len - json.len() - 5,
            json.len()
        );
    }

    let ram = ram_summary(stream);
    if !ram.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", head("RAM blocks"));
        let ram: Vec<(String, &BlockPages)> = ram
            .iter()
            .map(|(n, p)| (vmstate::Escaped(n.as_bytes()).to_string(), p))
            .collect();
        let nw = ram
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let (mut tz, mut tp) = (0, 0);
        for (n, p) in &ram {
            tz += p.zero;
            tp += p.normal;
            if style.align {
                let _ = writeln!(
                    o,
                    "  {n:<nw$}  {:>#12x} bytes  {:>6} zero  {:>6} normal{}",
                    p.length,
                    p.zero,
                    p.normal,
                    if p.xbzrle > 0 {
                        format!("  {} xbzrle", p.xbzrle)
                    } else {
                        String::new()
                    }
                );
            } else {
                let _ = writeln!(
                    o,
                    "block={n}\tlength={:#x}\tzero={}\tnormal={}\txbzrle={}",
                    p.length, p.zero, p.normal, p.xbzrle
                );
            }
        }
        let _ = writeln!(
            o,
            "{} {} blocks, {tz} zero pages, {tp} normal pages",
            head("RAM total"),
            ram.len()
        );
    }
    o
}

fn section_row(offset: String, s: &crate::model::SectionMeta<'_>, detail: String) -> [String; 8] {
    [
        offset,
        s.kind.name().to_string(),
        s.section_id.to_string(),
        s.name(),
        s.instance_id.to_string(),
        s.version_id.to_string(),
        s.body_len.to_string(),
        detail,
    ]
}
